"""The command line's options and streams: options on either side of the subcommand, `ask` through an endpoint,
with stdin piped, closed or absent, the chat refusing to start without a terminal, Ctrl-C as exit 130."""

from __future__ import annotations

import io
import os
import pty
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwen_chat.cli.ask import AskInputError, question_from
from qwen_chat.cli.main import main
from qwen_chat.cli.parser import parser
from replay_server import ReplayServer

# Each option, the subcommands it applies to, and an argument for it; `None`: only the option itself
SHARED = [("--model", "M", ["ask"]), ("--ctx", "4096", ["ask", "plan"]), ("--db", "x.db",
           ["search", "export", "import", "salvage", "doctor"]), ("--endpoint", "http://h:1/v1", ["ask"]),
          ("--api-key", "k", ["ask"]), ("--remote-model", "Qwen/Qwen3-8B", ["ask"])]
POSITIONAL = {"ask": ["q"], "plan": ["qwen3-8b"], "search": ["words"], "export": [], "import": ["f.json"],
              "salvage": [], "doctor": []}


@pytest.mark.parametrize(("option", "value", "command"),
                         [(o, v, c) for o, v, commands in SHARED for c in commands])
def test_every_shared_option_works_on_either_side_of_the_subcommand(option: str, value: str, command: str) -> None:
    dest = option.lstrip("-").replace("-", "_")
    before = parser().parse_args([option, value, command, *POSITIONAL[command]])
    after = parser().parse_args([command, *POSITIONAL[command], option, value])
    neither = parser().parse_args([command, *POSITIONAL[command]])
    assert str(getattr(before, dest)) == str(getattr(after, dest)) == value
    assert getattr(neither, dest) is None
    # given on both sides, the one after the subcommand wins
    other = "8192" if option == "--ctx" else "other"
    both = parser().parse_args([option, other, command, *POSITIONAL[command], option, value])
    assert str(getattr(both, dest)) == value


def test_ask_with_the_model_after_the_subcommand(tiny_models: dict[str, Path],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", "--model", str(tiny_models["hybrid"]), "--ctx", "512", "--no-think", "hi"]) == 0
    assert capsys.readouterr().out.endswith("\n")
    assert main(["--model", str(tiny_models["hybrid"]), "ask", "--ctx", "512", "--no-think", "hi"]) == 0


def test_a_message_too_long_for_the_context_names_ctx_not_a_key(tiny_models: dict[str, Path],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", "--model", str(tiny_models["hybrid"]), "--ctx", "256", "word " * 400]) == 1
    err = capsys.readouterr().err
    assert "does not fit the context" in err and "--ctx N (this run had 256 tokens" in err and "F7" not in err


@pytest.fixture
def replay() -> Iterator[ReplayServer]:
    server = ReplayServer().start()
    try:
        yield server
    finally:
        server.stop()


def test_ask_answers_through_an_endpoint(replay: ReplayServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--endpoint", replay.url, "ask", "Say hello"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "Hello there!\n" and captured.err == ""  # thinking hidden unless asked for
    body = replay.requests[-1]
    assert body["messages"] == [{"role": "user", "content": "Say hello"}]
    assert body["chat_template_kwargs"] == {"enable_thinking": True} and body["temperature"] == 0.6
    assert main(["ask", "--endpoint", replay.url, "--no-think", "--show-thinking", "Say hello"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "Hello there!\n" and "The user wants a greeting." in captured.err
    assert replay.requests[-1]["chat_template_kwargs"] == {"enable_thinking": False}
    assert main(["ask", "--endpoint", replay.url, "--remote-model", "other/model", "hi"]) == 1
    assert "does not serve other/model" in capsys.readouterr().err


def test_ask_through_llama_cpp_server(llama_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--endpoint", llama_server, "ask", "--no-think", "Reply with just the word: hello"]) == 0
    assert "hello" in capsys.readouterr().out.lower()


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qwen_chat", *args], capture_output=True, text=True, timeout=60,
                          env=os.environ.copy(), **kwargs)


def test_piped_text_follows_the_question(replay: ReplayServer) -> None:
    result = run_cli("ask", "--endpoint", replay.url, "summarise this", input="# Notes\nThe tide is at six.\n")
    assert result.returncode == 0, result.stderr
    assert replay.requests[-1]["messages"][0]["content"] == "summarise this\n\n# Notes\nThe tide is at six."
    only_stdin = run_cli("ask", "--endpoint", replay.url, input="just this")
    assert only_stdin.returncode == 0 and replay.requests[-1]["messages"][0]["content"] == "just this"


def test_question_from_stdin_cases() -> None:
    read, write = os.pipe()
    os.write(write, b"piped notes\n")
    os.close(write)
    with os.fdopen(read, "r") as pipe:
        assert question_from("question", pipe) == "question\n\npiped notes"
    assert question_from("question", io.StringIO("not a pipe: never read")) == "question"
    for argument, stdin, why in ((None, None, "stdin is closed"), ("-", io.StringIO("  \n"), "nothing to ask")):
        with pytest.raises(AskInputError, match=why):
            question_from(argument, stdin)
    read, write = os.pipe()
    os.write(write, b"\xff\xfe binary")
    os.close(write)
    with os.fdopen(read, "r") as pipe, pytest.raises(AskInputError, match="not UTF-8 text"):
        question_from("question", pipe)


def test_ask_with_stdin_closed_says_so(replay: ReplayServer) -> None:
    result = subprocess.run(["sh", "-c", 'exec "$0" -m qwen_chat ask --endpoint "$1" <&-', sys.executable,
                             replay.url], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        'qwen-chat: no question: stdin is closed. Give it as an argument: qwen-chat ask "question", or pipe text '
        'in: echo "question" | qwen-chat ask']


@pytest.mark.parametrize("missing", ["stdout", "stdin"])
def test_the_chat_refuses_to_start_without_a_terminal(tiny_models: dict[str, Path], replay: ReplayServer,
                                                      missing: str) -> None:
    main_side, terminal = pty.openpty()
    try:
        for source in (["--model", str(tiny_models["hybrid"]), "--ctx", "512"], ["--endpoint", replay.url]):
            streams = {"stdin": terminal, "stdout": subprocess.PIPE} if missing == "stdout" else \
                {"stdin": subprocess.DEVNULL, "stdout": terminal}
            result = subprocess.run([sys.executable, "-m", "qwen_chat", *source], stderr=subprocess.PIPE,
                                    text=True, timeout=60, **streams)
            assert result.returncode == 2
            assert result.stderr.strip().splitlines() == [
                f"qwen-chat: the chat needs a terminal, and {missing} is not one (a pipe, a file or closed). For "
                'scripts and pipes use ask: qwen-chat ask "question" (with --model or --endpoint)']
            assert result.stdout in (None, "")  # not one escape code
    finally:
        os.close(main_side)
        os.close(terminal)


def test_ctrl_c_exits_130_with_one_line(replay: ReplayServer) -> None:
    replay.mode = "slow"  # 10,000 words, 50 ms apart
    proc = subprocess.Popen([sys.executable, "-m", "qwen_chat", "ask", "--endpoint", replay.url, "go on"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.read(5) == b"word0"  # the answer is streaming
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.decode().strip().splitlines() == ["qwen-chat: interrupted (Ctrl-C)"]


def test_ctrl_c_anywhere_is_one_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from qwen_chat.cli import reports

    def interrupted() -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(reports, "print_models", interrupted)
    assert main(["models"]) == 130
    assert capsys.readouterr().err.strip() == "qwen-chat: interrupted (Ctrl-C)"

