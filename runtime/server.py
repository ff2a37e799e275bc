"""An OpenAI-compatible HTTP server on one loaded engine (`edge-ai serve`).

Any OpenAI client (the official SDKs, LangChain, editors' assistants) can point its base URL at
`http://host:port/v1`: `/v1/chat/completions`, `/v1/completions` (whole or streamed as SSE) and
`/v1/models`, with OpenAI-shaped errors so clients raise their usual exception types.

The engine runs one reply at a time on the model's own thread (`runtime.llm.scheduler`), and each
reply's events reach the event loop through `runtime.llm.stream`; the loop never blocks. A bounded
number of requests may wait their turn and the rest get 429 at once, so a burst of clients never
turns into hung connections.
A client that goes away stops its reply within a token, freeing the engine for the next one, or,
while it still waits, gives its place in the queue back at once. Shutting down (Ctrl-C) stops
every reply first, so open streams end cleanly instead of being cut after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import logging
import secrets
import socket
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from rich.console import Console
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_ai.config import Config
from edge_ai.errors import BusyError, EdgeAIError
from runtime.llm.events import DoneEvent, Event, SamplingParams, TokenEvent, TokenLogprob
from runtime.llm.grammar import SchemaError, json_grammar
from runtime.llm.interface import ChatEngine
from runtime.llm.scheduler import Call, Priority, Scheduler
from runtime.llm.stream import EventStream, stream

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_AFTER_SECONDS = 1
SHUTDOWN_GRACE_SECONDS = 5
CLIENT_GONE = 499  # nginx's "client closed request": the status of a reply nobody will read


# ----------------------------------------------------------------------------- requests


class StreamOptions(BaseModel):
    include_usage: bool = False


class JSONSchemaFormat(BaseModel):
    name: str = "response"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    def grammar(self) -> str | None:
        """The grammar that makes every reply JSON of this format (None for plain text)."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            return json_grammar()
        if self.json_schema is None:
            raise _invalid("response_format.json_schema is required when type is json_schema", "response_format")
        try:
            return json_grammar(self.json_schema.schema_)
        except SchemaError as exc:
            raise _invalid(f"response_format.json_schema.{exc}", "response_format") from None


# Accepted by OpenAI but beyond this server: refused by name (400) rather than quietly ignored.
# Each test says whether a request's value asks for the feature ("none" and empty lists do not).
_UNSUPPORTED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "tools": (bool, "tool calling is not supported"),
    "functions": (bool, "function calling is not supported"),
    "tool_choice": (lambda v: v not in (None, "none"), "tool calling is not supported"),
    "function_call": (lambda v: v not in (None, "none"), "function calling is not supported"),
    "audio": (lambda v: v is not None, "audio output is not supported"),
    "modalities": (lambda v: v not in (None, ["text"]), "only the text modality is supported"),
    "prediction": (lambda v: v is not None, "predicted outputs are not supported"),
    "n": (lambda v: v != 1, "one choice per request: the engine makes one reply at a time"),
    "best_of": (lambda v: v not in (None, 1), "one choice per request: the engine makes one reply at a time"),
    "echo": (bool, "echoing the prompt is not supported"),
    "suffix": (lambda v: v is not None, "insertion (suffix) is not supported"),
}


class GenerationRequest(BaseModel):
    """Fields shared by chat and text completions; unset sampling values come from the config.

    Unknown fields are ignored, as OpenAI's clients expect of compatible servers.
    """

    model: str | None = None
    temperature: float | None = Field(None, ge=0.0, le=5.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, description="extension (llama.cpp / Ollama)")
    min_p: float | None = Field(None, ge=0.0, le=1.0, description="extension (llama.cpp / Ollama)")
    repeat_penalty: float | None = Field(None, ge=0.0, le=10.0, description="extension (llama.cpp / Ollama)")
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[int, Annotated[float, Field(ge=-100, le=100)]] | None = None
    seed: int | None = Field(None, description="any integer; the same seed gives the same reply")
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    response_format: ResponseFormat | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1)
    tools: Any = None
    functions: Any = None
    tool_choice: Any = None
    function_call: Any = None
    audio: Any = None
    modalities: Any = None
    prediction: Any = None
    service_tier: Literal["auto", "default", "flex", "priority"] | None = Field(
        None, description="queue order: 'priority' goes before waiting requests, 'flex' after them")

    @property
    def priority(self) -> Priority:
        """The place in the queue: OpenAI's service tiers, without preempting anyone's running reply."""
        return {"priority": Priority.URGENT, "flex": Priority.BACKGROUND}.get(self.service_tier or "", Priority.NORMAL)

    def check_supported(self) -> None:
        """400 naming the first field whose feature this server lacks."""
        for name, (asks, why) in _UNSUPPORTED.items():
            if name in type(self).model_fields and asks(getattr(self, name)):
                raise APIError(400, f"{name}: {why} by this server", "invalid_request_error",
                               "unsupported_parameter", param=name)

    def sampling(self, cfg: Config, logprobs: int | None) -> SamplingParams:
        """The engine's sampling parameters: this request's values over the configured defaults."""
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        return SamplingParams.from_settings(
            cfg.sampling, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, min_p=self.min_p,
            repeat_penalty=self.repeat_penalty, presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty, logit_bias=tuple((self.logit_bias or {}).items()),
            seed=None if self.seed is None else self.seed % 2**31,  # llama.cpp seeds are 32-bit; -1 means random
            max_tokens=self.max_completion_tokens or self.max_tokens, stop=stop, logprobs=logprobs,
            grammar=self.response_format.grammar() if self.response_format else None,
        )

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ImageURL(BaseModel):
    url: str


class ContentPart(BaseModel):
    type: str
    text: str | None = None
    image_url: ImageURL | None = None


class ChatMessage(BaseModel):
    role: str
    content: str | list[ContentPart] | None = None

    def for_engine(self, index: int, *, sees_images: bool = False) -> dict[str, Any]:
        """A plain role/content dict: text parts joined, `developer` (newer OpenAI clients) as `system`;
        a user message's image (a base64 data URL) as "image" when the model can see.

        Roles and parts the model cannot take (tool results, audio, images for a text model) are refused by name.
        """
        where = f"messages[{index}]"
        if self.role not in ("system", "developer", "user", "assistant"):
            raise APIError(400, f"{where}.role: '{self.role}' messages are not supported (no tool calling); "
                                "use system, developer, user or assistant", "invalid_request_error",
                           "unsupported_parameter", param=f"{where}.role")
        parts = self.content if isinstance(self.content, list) else []
        images = [(i, part.image_url.url) for i, part in enumerate(parts)
                  if part.type == "image_url" and part.image_url is not None]
        for i, part in enumerate(parts):
            if part.type == "image_url" and part.image_url is not None and sees_images and self.role == "user":
                continue
            if part.type != "text" or part.text is None:
                why = ("this model cannot see images (the server needs screen.vision_mmproj, its projector)"
                       if part.type == "image_url" and not sees_images else "images go in user messages"
                       if part.type == "image_url" else "this server reads text and image parts only")
                raise APIError(400, f"{where}.content[{i}]: '{part.type}' content is not supported; {why}",
                               "invalid_request_error", "unsupported_parameter", param=f"{where}.content[{i}].type")
        if len(images) > 1:
            raise APIError(400, f"{where}.content: {len(images)} images in one message; send one per message",
                           "invalid_request_error", "unsupported_parameter", param=f"{where}.content")
        content = (self.content if isinstance(self.content, str)
                   else "\n".join(p.text or "" for p in parts if p.type == "text"))
        message: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": content}
        if images:
            i, url = images[0]
            message["image"] = _data_url_image(url, f"{where}.content[{i}].image_url.url")
        return message


def _data_url_image(url: str, param: str) -> Any:
    """The RGB pixels (numpy, height x width x 3) of a `data:image/...;base64,` URL."""
    import base64
    import binascii
    import io

    from runtime.screen.image_file import UnreadableImage, read_rgb

    def refuse(why: str) -> APIError:
        return APIError(400, f"{param}: {why}", "invalid_request_error", "invalid_value", param=param)

    head, comma, data = url.partition(",")
    if not (head.startswith("data:image/") and head.endswith(";base64") and comma):
        raise refuse("only base64 data URLs (data:image/png;base64,...) are read: this server is offline and "
                     "fetches nothing")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise refuse("the data URL's base64 is not valid") from None
    try:
        return read_rgb(io.BytesIO(raw))
    except UnreadableImage as exc:
        raise refuse(str(exc)) from None


class ChatRequest(GenerationRequest):
    messages: list[ChatMessage]
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    def top(self) -> int | None:
        """How many alternatives each token reports (None: no log-probabilities)."""
        if self.top_logprobs is not None and not self.logprobs:
            raise _invalid("top_logprobs: set logprobs to true to get top_logprobs", "top_logprobs")
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(GenerationRequest):
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    def text(self) -> str:
        """The one prompt: batches (several prompts) are refused by name."""
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise APIError(400, f"prompt: {len(self.prompt)} prompts in one request are not supported; send one",
                           "invalid_request_error", "unsupported_parameter", param="prompt")
        return self.prompt[0]


# ----------------------------------------------------------------------------- errors


class APIError(Exception):
    """An error answered as OpenAI's `{"error": {...}}` so clients raise their usual exception types."""

    def __init__(self, status: int, message: str, type_: str, code: str,
                 headers: Mapping[str, str] | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def _invalid(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, "invalid_request_error", "invalid_request", param=param)


def _as_api_error(exc: Exception) -> APIError:
    """Any failure as an OpenAI error: an EdgeAIError's kind gives the status (bad input 400, not
    found 404, busy 429, stopped 503, model load and internal 500); anything else is ours (500,
    one line, logged whole)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, EdgeAIError):
        return APIError(exc.http_status, str(exc), exc.openai_type, exc.code)
    log.error("internal error answering a request", exc_info=exc)
    reason = (str(exc).strip().splitlines() or [""])[0]
    return APIError(500, f"internal error: {type(exc).__name__}{': ' + reason if reason else ''}",
                    "server_error", "internal_error")


async def _api_error(_: Request, exc: Exception) -> Response:
    return _as_api_error(exc).response()


async def _validation_error(_: Request, exc: Exception) -> Response:
    """Bad JSON or a bad field: 400 naming each problem (and the first field as `param`), as OpenAI answers."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    problems = "; ".join(_describe(e, exc.body) for e in errors)
    param = _field(errors[0], exc.body) if errors and errors[0]["type"] != "json_invalid" else ""
    return _invalid(f"invalid request: {problems}", param or None).response()


def _field(error: Mapping[str, Any], body: Any) -> str:
    """The field's path as OpenAI writes it (`messages[0].content`): pydantic's location followed
    through the request body, which leaves out the names pydantic gives the branches of a union."""
    path, node = "", body
    loc = error["loc"][1:]
    for i, part in enumerate(loc):
        if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path, node = f"{path}[{part}]", node[part]
        elif isinstance(node, dict) and (part in node or (error["type"] == "missing" and i == len(loc) - 1)):
            path, node = f"{path}.{part}" if path else str(part), node.get(part)
        else:
            break
    return path


def _describe(error: Mapping[str, Any], body: Any) -> str:
    if error["type"] == "json_invalid":
        return f"the body is not valid JSON ({error['ctx']['error']} at character {error['loc'][-1]})"
    return f"{_field(error, body) or 'body'}: {error['msg']}"


class _InternalErrors:
    """ASGI middleware: an unexpected exception still gets an OpenAI-shaped 500, not plain text.

    The errors FastAPI's handlers know (APIError, EdgeAIError, validation) never reach it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started or scope["type"] != "http":
                raise  # too late for an error response: the server logs it
            await _as_api_error(exc).response()(scope, receive, send)


async def _http_error(_: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods, in the same error shape as everything else."""
    assert isinstance(exc, HTTPException)
    code = "not_found" if exc.status_code == 404 else "invalid_request"
    return APIError(exc.status_code, str(exc.detail), "invalid_request_error", code, exc.headers).response()


# ----------------------------------------------------------------------------- generation


def _shutting_down() -> APIError:
    return APIError(503, "the server is shutting down; retry against another instance or later",
                    "server_error", "server_shutting_down", {"Retry-After": str(RETRY_AFTER_SECONDS)})


# ----------------------------------------------------------------------------- response shapes


class ReplyShape(ABC):
    """Turns one reply into OpenAI JSON, whole or as stream chunks; subclasses shape the choice
    and the log-probabilities (`with_logprobs`: whether the request asked for them)."""

    whole_object = ""
    chunk_object = ""
    id_prefix = ""

    def __init__(self, model: str, with_logprobs: bool) -> None:
        self.id = self.id_prefix + uuid.uuid4().hex
        self.created = int(time.time())
        self.model = model
        self.with_logprobs = with_logprobs

    def _envelope(self, obj: str, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "choices": choices, **extra}

    def _logprobs(self, tokens: Sequence[TokenLogprob]) -> dict[str, Any] | None:
        return self.logprobs(tokens) if self.with_logprobs else None

    def whole(self, done: DoneEvent, tokens: Sequence[TokenLogprob]) -> dict[str, Any]:
        choice = self.whole_choice(done.text, _finish_reason(done), self._logprobs(tokens))
        return self._envelope(self.whole_object, [choice], usage=_usage(done))

    def chunk(self, event: TokenEvent | None, finish_reason: str | None = None) -> dict[str, Any]:
        logprobs = self._logprobs(event.logprobs) if event is not None else None
        return self._envelope(self.chunk_object, [self.chunk_choice(event.text if event else None, finish_reason,
                                                                    logprobs)])

    def usage_chunk(self, done: DoneEvent) -> dict[str, Any]:
        return self._envelope(self.chunk_object, [], usage=_usage(done))

    def opening(self) -> list[dict[str, Any]]:
        """Chunks sent before any text."""
        return []

    @abstractmethod
    def logprobs(self, tokens: Sequence[TokenLogprob]) -> dict[str, Any]: ...

    @abstractmethod
    def whole_choice(self, text: str, finish_reason: str, logprobs: dict[str, Any] | None) -> dict[str, Any]: ...

    @abstractmethod
    def chunk_choice(self, text: str | None, finish_reason: str | None,
                     logprobs: dict[str, Any] | None) -> dict[str, Any]: ...


def _token_text(token: bytes) -> str:
    """A token as text; a token holding part of a character shows U+FFFD (its `bytes` are exact)."""
    return token.decode("utf-8", errors="replace")


class ChatShape(ReplyShape):
    whole_object = "chat.completion"
    chunk_object = "chat.completion.chunk"
    id_prefix = "chatcmpl-"

    def opening(self) -> list[dict[str, Any]]:
        """OpenAI streams announce the assistant role in a first, empty delta."""
        role = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        return [self._envelope(self.chunk_object, [role])]

    def logprobs(self, tokens: Sequence[TokenLogprob]) -> dict[str, Any]:
        def item(token: bytes, logprob: float) -> dict[str, Any]:
            return {"token": _token_text(token), "logprob": logprob, "bytes": list(token)}

        return {"content": [{**item(t.token, t.logprob), "top_logprobs": [item(*alt) for alt in t.top]}
                            for t in tokens], "refusal": None}

    def whole_choice(self, text: str, finish_reason: str, logprobs: dict[str, Any] | None) -> dict[str, Any]:
        return {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
                "finish_reason": finish_reason}

    def chunk_choice(self, text: str | None, finish_reason: str | None,
                     logprobs: dict[str, Any] | None) -> dict[str, Any]:
        return {"index": 0, "delta": {"content": text} if text else {}, "logprobs": logprobs,
                "finish_reason": finish_reason}


class TextShape(ReplyShape):
    """Legacy completions; their log-probabilities are parallel lists, with each token's character
    offset counted from the start of the prompt, as OpenAI's legacy API does."""

    whole_object = "text_completion"
    chunk_object = "text_completion"
    id_prefix = "cmpl-"

    def __init__(self, model: str, with_logprobs: bool, prompt: str) -> None:
        super().__init__(model, with_logprobs)
        self._offset = len(prompt)  # where the next token's text starts

    def logprobs(self, tokens: Sequence[TokenLogprob]) -> dict[str, Any]:
        texts = [_token_text(t.token) for t in tokens]
        offsets = []
        for text in texts:
            offsets.append(self._offset)
            self._offset += len(text)
        return {"tokens": texts, "token_logprobs": [t.logprob for t in tokens],
                "top_logprobs": [{_token_text(alt): lp for alt, lp in t.top} for t in tokens],
                "text_offset": offsets}

    def whole_choice(self, text: str, finish_reason: str, logprobs: dict[str, Any] | None) -> dict[str, Any]:
        return {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}

    def chunk_choice(self, text: str | None, finish_reason: str | None,
                     logprobs: dict[str, Any] | None) -> dict[str, Any]:
        return {"index": 0, "text": text or "", "logprobs": logprobs, "finish_reason": finish_reason}


def _finish_reason(done: DoneEvent) -> str:
    """OpenAI knows only stop/length (a cancelled reply never gets here: see `_sse_events`)."""
    return "length" if done.reason == "length" else "stop"


def _usage(done: DoneEvent) -> dict[str, int]:
    prompt, completion = done.metrics.prompt_tokens, done.metrics.generated_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _sse_events(shape: ReplyShape, first: Event, generation: EventStream,
                      include_usage: bool) -> AsyncIterator[str]:
    """The reply's chunks. Once the stream has begun, an error can only be told in a chunk: an
    OpenAI error object, on which OpenAI's clients raise an APIError, then the stream ends."""
    for payload in shape.opening():
        yield _sse(payload)
    event = first
    try:
        while isinstance(event, TokenEvent):
            yield _sse(shape.chunk(event))
            event = await generation.next()
    except Exception as exc:
        yield _sse(_as_api_error(exc).body())
        return
    if event.reason == "cancelled":  # the server is shutting down: say so rather than pass it off as whole
        yield _sse(_shutting_down().body())
        return
    yield _sse(shape.chunk(None, _finish_reason(event)))
    if include_usage:
        yield _sse(shape.usage_chunk(event))
    yield "data: [DONE]\n\n"


class ReplyStream(StreamingResponse):
    """The SSE response of one reply. However it ends (done, client gone, shutdown), the reply is
    stopped, so a vanished client frees the engine within a token."""

    def __init__(self, content: AsyncIterator[str], generation: EventStream) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._generation = generation

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._generation.cancel()


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (the request body has already been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_client_leaves(request: Request, generation: EventStream, work: Awaitable[T]) -> T | None:
    """Await `work`, or None if the client leaves first; either way an unfinished reply is stopped.

    Without this, a client that timed out while queued or waiting for a long reply would keep
    the engine busy for nobody.
    """
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        return task.result() if task.done() else None
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            generation.cancel()


# ----------------------------------------------------------------------------- the app


class Server:
    """The endpoints, bound to one config and one engine."""

    def __init__(self, cfg: Config, scheduler: Scheduler, *, owns_engine: bool) -> None:
        if scheduler.engine is None:
            raise ValueError("the server needs a loaded engine")
        self.cfg = cfg
        self.scheduler = scheduler
        self.owns_engine = owns_engine  # free it on shutdown (else whoever passed it in does)
        self.engine: ChatEngine = scheduler.engine
        self.started = int(time.time())

    def start(self, call: Call, priority: Priority) -> EventStream:
        """Queue one reply, or answer 429 at once when the queue is full (503 once shutting down)."""
        try:
            return stream(self.scheduler, call, priority=priority)
        except BusyError as exc:
            raise APIError(429, f"the server is busy: {exc}; retry shortly", "rate_limit_error",
                           "rate_limit_exceeded", {"Retry-After": str(RETRY_AFTER_SECONDS)}) from None

    def stop_all(self) -> None:
        """Shutdown: refuse new replies, end the waiting ones with 503 and stop the running one.
        Does not wait: the loop must go on to deliver the running reply's last event."""
        self.scheduler.close(_shutting_down(), timeout=0, free_engine=self.owns_engine)

    def authorize(self, request: Request) -> None:
        """With `server.api_key` set, every request must carry `Authorization: Bearer <key>`."""
        key = self.cfg.server.api_key
        if not key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), key.encode()):
            raise APIError(401, "missing or wrong API key; send the server's key as `Authorization: Bearer <key>`",
                           "invalid_request_error", "invalid_api_key")

    def _check_model(self, model: str | None) -> None:
        if model is not None and model != self.engine.name:
            raise APIError(404, f"the model '{model}' is not loaded; this server has '{self.engine.name}'",
                           "invalid_request_error", "model_not_found")

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.engine.name, "object": "model", "created": self.started,
                "owned_by": "edge-ai"}

    def app(self) -> FastAPI:
        """The FastAPI app serving these endpoints."""
        app = FastAPI(title="edge-ai", summary="OpenAI-compatible API of an offline on-device model",
                      lifespan=self._lifespan)
        api = APIRouter(dependencies=[Depends(self.authorize)])
        api.get("/v1/models")(self.list_models)
        api.get("/v1/models/{model}")(self.get_model)
        api.post("/v1/chat/completions")(self.chat_completions)
        api.post("/v1/completions")(self.completions)
        app.include_router(api)
        app.get("/health")(self.health)  # no key: for supervisors and load balancers, as llama.cpp's server
        app.add_exception_handler(APIError, _api_error)
        app.add_exception_handler(EdgeAIError, _api_error)
        app.add_exception_handler(RequestValidationError, _validation_error)
        app.add_exception_handler(HTTPException, _http_error)
        app.add_middleware(_InternalErrors)
        return app

    @contextlib.asynccontextmanager
    async def _lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        """On shutdown, end the model's thread (a reply still running is stopped within a token)."""
        yield
        self.stop_all()
        self.scheduler.close(free_engine=self.owns_engine)

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "model": self.engine.name}

    async def list_models(self) -> dict[str, Any]:
        return {"object": "list", "data": [self._model_card()]}

    async def get_model(self, model: str) -> dict[str, Any]:
        self._check_model(model)
        return self._model_card()

    async def chat_completions(self, body: ChatRequest, request: Request) -> Response:
        self._check_model(body.model)
        body.check_supported()
        messages = [m.for_engine(i, sees_images=self.engine.sees_images) for i, m in enumerate(body.messages)]
        sampling = body.sampling(self.cfg, body.top())
        generation = self.start(lambda engine, stop: engine.chat(messages, sampling, stop=stop), body.priority)
        return await self._answer(request, generation, ChatShape(self.engine.name, body.logprobs), body)

    async def completions(self, body: CompletionRequest, request: Request) -> Response:
        self._check_model(body.model)
        body.check_supported()
        prompt, sampling = body.text(), body.sampling(self.cfg, body.logprobs)
        generation = self.start(lambda engine, stop: engine.complete(prompt, sampling, stop=stop), body.priority)
        shape = TextShape(self.engine.name, body.logprobs is not None, prompt)
        return await self._answer(request, generation, shape, body)

    async def _answer(self, request: Request, generation: EventStream, shape: ReplyShape,
                      body: GenerationRequest) -> Response:
        """Whole JSON, or SSE once the first event is in (so engine errors still get their status)."""
        if not body.stream:
            outcome = await _unless_client_leaves(request, generation, generation.collect())
            if outcome is None:
                return Response(status_code=CLIENT_GONE)
            done, logprobs = outcome
            if done.reason == "cancelled":  # only a shutdown stops a reply whose client still waits
                raise _shutting_down()
            return JSONResponse(shape.whole(done, logprobs))
        first = await _unless_client_leaves(request, generation, generation.next())
        if first is None:
            return Response(status_code=CLIENT_GONE)
        if isinstance(first, DoneEvent) and first.reason == "cancelled":
            raise _shutting_down()
        return ReplyStream(_sse_events(shape, first, generation, body.include_usage), generation)


def create_app(cfg: Config, engine: ChatEngine) -> FastAPI:
    """The OpenAI-compatible API for an already loaded `engine`, with `cfg.server` auth and queue limits."""
    scheduler = Scheduler(engine, queue_size=cfg.server.queue_size, name="server")
    return Server(cfg, scheduler, owns_engine=False).app()


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket up front: a busy port becomes a one-line error, not a uvicorn log.

    uvicorn is then handed this very socket, so nothing can take the port in between.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise EdgeAIError(f"cannot serve on host '{host}' ({exc.strerror}); pass --host 127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is not "in use"
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise EdgeAIError(f"port {port} on {host} is already in use; pass --port or stop the other server") from None
        raise EdgeAIError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --host or --port") from None
    return sock


class _Uvicorn(uvicorn.Server):
    """uvicorn, but a shutdown first stops the replies: the running one ends within a token (its
    stream closes with an OpenAI error chunk, a whole reply gets a 503), the waiting ones get 503,
    so connections close at once instead of being cut after the grace period."""

    def __init__(self, config: uvicorn.Config, server: Server) -> None:
        super().__init__(config)
        self._server = server

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._server.stop_all()
        await super().shutdown(sockets)


def loopback_only(host: str) -> bool:
    """Whether every address `host` stands for is this machine's own (127.0.0.0/8, ::1)."""
    try:
        infos = socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return True  # not an address at all: `bind` reports it
    return all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def check_exposure(cfg: Config, allow_unauthenticated: bool) -> None:
    """Refuse to serve the network with no API key unless the user said they mean it: anyone who can
    reach the port could otherwise use the model (and this machine's CPU) unnoticed."""
    host = cfg.server.host
    if cfg.server.api_key or allow_unauthenticated or loopback_only(host):
        return
    raise EdgeAIError(f"refusing to serve on {host or 'every address'} without an API key: anyone on the network "
                      "could use it; pass --api-key KEY (clients send it as a bearer token), or "
                      "--allow-unauthenticated on a network you trust, or --host 127.0.0.1")


def serve(cfg: Config, load_engine: Callable[[], ChatEngine], log: Console, *, allow_unauthenticated: bool = False) -> None:
    """Serve the engine `load_engine` opens on cfg.server.host:port until interrupted.

    An address beyond loopback needs an API key or `allow_unauthenticated` (see `check_exposure`).
    The port is bound before the model loads, so a busy port is reported at once rather than
    after seconds of loading. Ctrl-C (SIGINT) or SIGTERM stops the replies in progress and returns
    within a token or so; uvicorn then re-raises the signal, so `edge-ai serve` ends like `ask` on
    Ctrl-C (exit code 130).
    """
    check_exposure(cfg, allow_unauthenticated)
    host, port = cfg.server.host, cfg.server.port
    sock = bind(host, port)
    scheduler = Scheduler(queue_size=cfg.server.queue_size, name="server")
    try:
        scheduler.load(load_engine).result()  # on the model's own thread, where it will run
    except BaseException:
        sock.close()
        scheduler.close()
        raise
    server = Server(cfg, scheduler, owns_engine=True)
    engine = server.engine
    config = uvicorn.Config(server.app(), host=host, port=port, log_level="warning",
                            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS)
    url_host = f"[{host}]" if ":" in host else host
    log.print(f"serving {engine.name} on http://{url_host}:{port}/v1", markup=False, highlight=False, soft_wrap=True)
    try:
        _Uvicorn(config, server).run(sockets=[sock])
    finally:
        scheduler.close()  # waits for the stopped reply, then frees the model on its thread
