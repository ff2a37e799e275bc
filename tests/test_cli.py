"""The `edge-ai` command line, run as a user runs it (a real subprocess of the console script)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

EDGE_AI = [sys.executable, "-m", "edge_ai"]


def edge_ai(*args: str, stdin: str | None = "", timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGE_AI, *args], input=stdin, capture_output=True, text=True, timeout=timeout,
                          env=os.environ.copy())


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str, code: int = 1) -> None:
    """One `error:` line with `needles` in it, no traceback, and the error kind's exit code
    (edge_ai.errors: 1 bad input, 3 not found, 4 model load...)."""
    assert result.returncode == code, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.slow
def test_ask_streams_a_reply_and_reports_metrics_as_json(registered_model: Path) -> None:
    plain = edge_ai("ask", "Name a fruit.", "-n", "12", "-t", "0")
    assert plain.returncode == 0 and plain.stdout.strip() and plain.stderr == ""
    result = edge_ai("ask", "--json", "-n", "12", "-t", "0", "--system", "", stdin="Name a fruit.")
    data = json.loads(result.stdout)
    assert data["finish_reason"] in ("stop", "length") and data["reply"]
    assert data["metrics"]["generated_tokens"] <= 12 and data["metrics"]["ttft_s"] > 0
    assert data["metrics"]["prompt_tokens"] > 3


@pytest.mark.slow
def test_without_a_terminal_edge_ai_answers_stdin(registered_model: Path) -> None:
    result = edge_ai(stdin="Say hi.")
    assert result.returncode == 0 and result.stdout.strip()


@pytest.mark.slow
def test_chat_app_flags_pick_the_model_and_settings(registered_model: Path, model_path: Path) -> None:
    """`edge-ai -m FILE -c N` (the chat app's own flags) also drive the no-terminal answer."""
    result = edge_ai("-m", str(model_path), "-c", "512", "--threads", "1", "-t", "0", stdin="Say hi.")
    assert result.returncode == 0 and result.stdout.strip() and result.stderr == ""
    assert_one_line_error(edge_ai("-m", "no-such-model", stdin="Say hi."), "no-such-model", code=3)
    assert_one_line_error(edge_ai("-m", "x", "ask", "hi"), "put them after the command", "edge-ai ask --help")


@pytest.mark.slow
def test_ctrl_c_stops_the_reply_cleanly(registered_model: Path) -> None:
    proc = subprocess.Popen([*EDGE_AI, "ask", "Write a long story.", "-n", "2000", "--temperature", "1",
                             "--min-p", "0"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.read(1)  # the reply has started
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "[stopped]" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("args, needle", [
    (["ask", "-c", "abc", "hi"], "'--context'"),
    (["ask", "--bogus"], "No such option: --bogus"),
    (["nosuch"], "No such command 'nosuch'"),
    (["models", "rm"], "Missing argument"),
])
def test_usage_errors_are_one_line_naming_the_help(args: list[str], needle: str) -> None:
    result = edge_ai(*args)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr
    assert lines[0].endswith(" --help'")


def test_config_commands() -> None:
    path = edge_ai("config", "path").stdout.strip()
    assert path.endswith("config.toml")
    assert edge_ai("config", "set", "sampling.temperature", "0.3").returncode == 0
    assert "0.3" in Path(path).read_text()
    shown = edge_ai("config", "show").stdout
    assert "sampling.temperature" in shown and "0.3" in shown
    assert_one_line_error(edge_ai("config", "set", "sampling.top_k", "-5"), "sampling.top_k", "out of range")
    assert_one_line_error(edge_ai("config", "set", "nope.key", "1"), "unknown setting 'nope.key'")


def test_models_add_list_info_rm(model_path: Path) -> None:
    assert edge_ai("models", "add", str(model_path), "--name", "tiny").returncode == 0
    rows = {r["name"]: r for r in json.loads(edge_ai("models", "list", "--json").stdout)}
    tiny = rows["tiny"]
    assert tiny["arch"] == "gemma3" and tiny["quant"] == "Q4_K_M" and tiny["context"] == 32768
    assert tiny["params"] > 200_000_000 and tiny["chat_template"] is False
    info = json.loads(edge_ai("models", "info", "tiny", "--json").stdout)
    assert info["summary"]["tensor_count"] == 236 and info["summary"]["problems"] == []
    assert info["metadata"]["general.architecture"] == "gemma3"
    assert sum(info["summary"]["tensor_types"].values()) == 236
    assert edge_ai("models", "rm", "tiny").returncode == 0
    assert "tiny" not in edge_ai("models", "list").stdout


def test_bad_model_inputs_give_one_line_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a model at all" * 10)
    assert_one_line_error(edge_ai("ask", "-m", str(junk), "hi"), "junk.gguf")
    assert_one_line_error(edge_ai("models", "add", str(junk)), "junk.gguf")
    assert_one_line_error(edge_ai("ask", "-m", "no-such-model", "hi"), "unknown model 'no-such-model'", code=3)
    assert_one_line_error(edge_ai("ask", "-m", str(tmp_path / "gone.gguf"), "hi"), "no such model file", code=3)
    assert_one_line_error(edge_ai("ask", "  "), "no question")


def test_unwritable_data_dir_is_reported(tmp_path: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("EDGE_AI_HOME", str(blocker / "home"))
    assert_one_line_error(edge_ai("models", "add", str(model_path), "--name", "x"), "cannot write")
    assert_one_line_error(edge_ai("config", "set", "sampling.top_k", "3"), "cannot write")


def test_broken_config_file_is_one_line() -> None:
    path = Path(edge_ai("config", "path").stdout.strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is = = not toml")
    assert_one_line_error(edge_ai("config", "show"), "not valid TOML", str(path))


def test_doctor_reports_hardware_and_model_fit(registered_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = edge_ai("doctor")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for row in ("CPU", "RAM", "llama.cpp", "GPU offload", "display", "audio", "config", "data", "cache"):
        assert row in out
    assert "model cache" in out and "(1 file, 0.2" in out  # the assembled default model, ~0.24 GiB
    assert "gemma3-270m" in out and "ok" in out
    assert "no display" in out  # a problem, and its fix, is named


def test_doctor_lists_a_broken_config_as_a_problem_and_goes_on(registered_model: Path) -> None:
    from edge_ai.paths import get_paths

    config_file = get_paths().config_file
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text("[model]\ncontext = 'big'\n")
    result = edge_ai("doctor")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "CPU" in result.stdout and "gemma3-270m" in result.stdout  # the rest of the report is there
    assert "config:" in result.stdout and "model.context" in result.stdout


def test_user_text_with_markup_like_brackets_prints_verbatim() -> None:
    prompt = "Use [/INST] and [b]bold[/b]"
    result = edge_ai("config", "set", "chat.system_prompt", prompt)
    assert result.returncode == 0 and prompt in result.stdout, result.stderr
    shown = edge_ai("config", "show")
    assert shown.returncode == 0 and "[/INST]" in shown.stdout and "[b]bold" in shown.stdout


def test_a_registered_model_whose_file_is_gone_is_reported(model_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "gone.gguf"
    copy.symlink_to(model_path)
    assert edge_ai("models", "add", str(copy), "--name", "gone").returncode == 0
    copy.unlink()
    assert "file missing" in edge_ai("models", "list").stdout
    doctor = edge_ai("doctor")
    assert doctor.returncode == 1 and "file missing" in doctor.stdout
    assert_one_line_error(edge_ai("ask", "-m", "gone", "hi"), "no longer exists", code=3)
