"""The one exception type users see, in a few kinds.

Every expected failure (bad file, bad setting, busy port...) is an `EdgeAIError` with a single line
that names the problem and what to do; the CLI prints it and exits non-zero instead of showing a
traceback. Its kind says whose problem it is, as data the callers read rather than test for: the
CLI exits with `exit_code`, the server answers with `http_status` and OpenAI's error `type`.

| kind            | exit | HTTP | when                                                        |
|-----------------|------|------|-------------------------------------------------------------|
| EdgeAIError     | 1    | 400  | bad input: a file, a flag, a setting, a request             |
| NotFoundError   | 3    | 404  | a model, file or conversation that does not exist           |
| ModelLoadError  | 4    | 500  | llama.cpp could not load (or crashed loading) a model file  |
| BusyError       | 5    | 429  | the model is answering others and the queue is full         |
| StoppedError    | 130  | 503  | the reply was stopped before it finished (Esc, preemption)  |
| InternalError   | 70   | 500  | a bug or an unexpected library failure                      |

(Exit 2 is a usage error: an unknown option or a missing argument.)
"""


class EdgeAIError(Exception):
    """A user-facing error: one line saying what is wrong and how to fix it (bad input by default)."""

    exit_code = 1
    http_status = 400
    openai_type = "invalid_request_error"
    code = "invalid_request"


class NotFoundError(EdgeAIError):
    """What the user named does not exist: a model, a file, a conversation."""

    exit_code = 3
    http_status = 404
    code = "not_found"


class ModelLoadError(EdgeAIError):
    """llama.cpp refused, or crashed in a child process, loading a model file."""

    exit_code = 4
    http_status = 500
    openai_type = "server_error"
    code = "model_load_failed"


class BusyError(EdgeAIError):
    """The model is busy and no more requests may wait: try again shortly."""

    exit_code = 5
    http_status = 429
    openai_type = "rate_limit_error"
    code = "busy"


class StoppedError(EdgeAIError):
    """The reply was stopped before it finished (the user pressed Esc, or a more urgent request
    preempted it)."""

    exit_code = 130
    http_status = 503
    openai_type = "server_error"
    code = "stopped"


class InternalError(EdgeAIError):
    """Something failed that should not have: a bug, or a library failing unexpectedly."""

    exit_code = 70
    http_status = 500
    openai_type = "server_error"
    code = "internal_error"
