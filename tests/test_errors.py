"""Errors have kinds: the CLI exits and the server answers by kind, and each is still one line."""

from __future__ import annotations

import pytest

from edge_ai.errors import BusyError, EdgeAIError, InternalError, ModelLoadError, NotFoundError, StoppedError
from runtime.server import _as_api_error


@pytest.mark.parametrize(("kind", "exit_code", "status", "code"), [
    (EdgeAIError, 1, 400, "invalid_request"),
    (NotFoundError, 3, 404, "not_found"),
    (ModelLoadError, 4, 500, "model_load_failed"),
    (BusyError, 5, 429, "busy"),
    (StoppedError, 130, 503, "stopped"),
    (InternalError, 70, 500, "internal_error"),
])
def test_each_kind_has_its_exit_code_and_http_status(kind: type[EdgeAIError], exit_code: int, status: int,
                                                     code: str) -> None:
    error = kind("what went wrong; what to do")
    assert isinstance(error, EdgeAIError) and error.exit_code == exit_code
    api = _as_api_error(error)
    assert (api.status, api.code, api.message) == (status, code, "what went wrong; what to do")
    assert api.body()["error"]["type"] == kind.openai_type


def test_an_unexpected_exception_is_a_one_line_500() -> None:
    api = _as_api_error(ValueError("bad thing\nwith a second line"))
    assert api.status == 500 and api.message == "internal error: ValueError: bad thing"
