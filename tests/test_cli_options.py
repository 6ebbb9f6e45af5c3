"""The command line's options and streams: options on either side of the subcommand, `ask` through an endpoint,
with stdin piped, closed or absent, the chat refusing to start without a terminal, Ctrl-C as exit 130."""

from __future__ import annotations

import argparse
import contextlib
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
from qwen_chat.cli.parser import parse, parser
from replay_server import ReplayServer


def shared_options() -> list[argparse.Action]:
    """The options given before a subcommand, read from the real parser (--help and --version answer at once,
    whatever follows, so they are no option to pass on)."""
    return [a for a in parser()._actions if a.option_strings
            and not isinstance(a, argparse._HelpAction | argparse._VersionAction)]


def subcommands(top: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...],
                                                                                           argparse.ArgumentParser]]:
    """Every subcommand (and mcp's actions) with its parser, from the real parser."""
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
                yield from subcommands(sub, (*path, name)) if nested else [((*path, name), sub)]


def required_positionals(sub: argparse.ArgumentParser) -> list[str]:
    """A value for each positional the subcommand needs (an int where it takes one)."""
    return ["1" if a.type is int else "x" for a in sub._actions
            if not a.option_strings and a.nargs in (None, "+") and not isinstance(a, argparse._SubParsersAction)]


def takes_the_rest(sub: argparse.ArgumentParser) -> bool:
    return any(a.nargs == argparse.REMAINDER for a in sub._actions)


def takes_a_number(action: argparse.Action) -> bool:
    return action.metavar == "N"  # --ctx N, --seed N


def value_for(action: argparse.Action) -> str:
    if action.dest == "threads":  # 1-1024
        return "4"
    return "4096" if takes_a_number(action) else "http://h:1/v1" if action.dest == "endpoint" else "v.db"


def outcome(argv: list[str]) -> tuple[str, object]:
    """What the real parser makes of `argv`: the namespace, or the exit status and the error line."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return "accepted", vars(parse(argv))
    except SystemExit as exc:
        return "refused", (exc.code, err.getvalue().strip().splitlines()[-1])


COMBINATIONS = [(flag, action, path, sub) for action in shared_options() for flag in action.option_strings
                for path, sub in subcommands(parser())]


@pytest.mark.parametrize(("flag", "action", "path", "sub"), COMBINATIONS,
                         ids=[f"{' '.join(c[2])} {c[0]}" for c in COMBINATIONS])
def test_every_shared_option_is_the_same_on_either_side_of_every_subcommand(
        flag: str, action: argparse.Action, path: tuple[str, ...], sub: argparse.ArgumentParser) -> None:
    value, rest = value_for(action), required_positionals(sub)
    # an endpoint option is only taken with --endpoint, a local-model one only without it (serve's --api-key is the
    # key its clients must send: no endpoint there)
    endpoint_option = action.dest in ("api_key", "remote_model", "save_endpoint")
    context = ["--endpoint", "http://h:1/v1"] if endpoint_option and path[0] != "serve" else []
    before = outcome([*context, flag, value, *path, *rest])
    sides = [outcome([*context, *path, flag, value, *rest])]  # right after the subcommand
    if not takes_the_rest(sub):  # mcp add: what follows NAME is the server's command line
        sides.append(outcome([*context, *path, *rest, flag, value]))
    assert all(side == before for side in sides), (before, sides)
    kind, result = before
    if kind == "accepted":
        assert isinstance(result, dict) and str(result[action.dest]) == value
        assert outcome([*path, *rest])[1][action.dest] is None  # type: ignore[index]  # not given: None
        other = "8" if action.dest == "threads" else "8192" if takes_a_number(action) else \
            "http://h:2/v1" if action.dest == "endpoint" else "other"
        both = outcome([*context, flag, other, *path, *rest, flag, value])
        assert both[0] == "accepted" and str(both[1][action.dest]) == value  # type: ignore[index]  # after wins
    else:
        code, line = result  # type: ignore[misc]
        assert code == 2 and f"nothing to `qwen-chat {path[0]}`" in line and action.option_strings[0] in line


def test_the_audits_cases_and_that_the_lists_are_read_from_the_parser() -> None:
    seen = {path for _, _, path, _ in COMBINATIONS}
    assert {("ask",), ("calibrate",), ("plan",), ("mcp", "add"), ("mcp", "test")} <= seen
    assert {a.dest for a in shared_options()} == {"model", "ctx", "endpoint", "api_key", "remote_model",
                                                  "save_endpoint", "db", "seed", "threads"}
    assert outcome(["calibrate", "--model", "m"]) == outcome(["--model", "m", "calibrate"])
    assert outcome(["calibrate", "--model", "m"])[0] == "accepted"
    for argv in (["ask", "--db", "p", "q"], ["--db", "p", "ask", "q"]):
        assert outcome(argv) == ("refused", (2, "qwen-chat: error: --db means nothing to `qwen-chat ask`; it is "
                                                "for the chat, `doctor`, `search`, `export`, `import` and `salvage`"))
    saved = (["ask", "--endpoint", "http://h:1/v1", "--save-endpoint", "lab", "q"],
             ["--endpoint", "http://h:1/v1", "--save-endpoint", "lab", "ask", "q"])
    assert outcome(saved[0]) == outcome(saved[1]) and outcome(saved[0])[1]["save_endpoint"] == "lab"  # type: ignore[index]


@pytest.mark.parametrize(("argv", "why"), [
    (["--api-key", "k"], "--api-key goes with --endpoint URL"),
    (["ask", "--remote-model", "m", "q"], "--remote-model goes with --endpoint URL"),
    (["--save-endpoint", "lab", "ask", "q"], "--save-endpoint goes with --endpoint URL"),
    (["--endpoint", "http://h:1/v1", "--model", "m"], "--model is for a local model and --endpoint for a server"),
    (["ask", "--endpoint", "http://h:1/v1", "--ctx", "4096", "q"], "--ctx is for a local model")])
def test_an_option_that_would_do_nothing_with_the_others_is_refused(argv: list[str], why: str) -> None:
    kind, (code, line) = outcome(argv)  # type: ignore[misc]
    assert (kind, code) == ("refused", 2) and why in line


def test_mcp_add_refuses_a_shared_option_after_its_name_too(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["mcp", "add", "time", "--db", "x.db", "--", "uvx", "mcp-server-time"])
    assert exit_.value.code == 2 and "--db means nothing to `qwen-chat mcp`" in capsys.readouterr().err


def test_ask_saves_the_endpoint_it_answered_through(replay: ReplayServer, capsys: pytest.CaptureFixture[str]) -> None:
    from qwen_chat.config.settings import load_endpoints

    assert main(["ask", "--endpoint", replay.url, "--save-endpoint", "lab", "Say hello"]) == 0
    assert capsys.readouterr().out == "Hello there!\n"
    assert load_endpoints([])["lab"].url == replay.url
    assert main(["--endpoint", "lab", "ask", "Say hello"]) == 0


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


def _interruptible() -> None:
    """Ctrl-C as a terminal gives it: a suite started in the background by a shell without job control (a CI
    script's `cmd &`) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt (POSIX asks
    programs to keep it ignored, and so does the app)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_exits_130_with_one_line(replay: ReplayServer) -> None:
    replay.mode = "slow"  # 10,000 words, 50 ms apart
    proc = subprocess.Popen([sys.executable, "-m", "qwen_chat", "ask", "--endpoint", replay.url, "go on"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_interruptible)
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



def test_ask_with_a_seed_gives_the_same_answer_each_time(tiny_models: dict[str, Path],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The real engine on the tiny model (random weights, so its text is noise that any change of sampling
    shows): the same seed and question give the same answer, on either side of `ask`; another seed another."""
    model = ["--model", str(tiny_models["hybrid"]), "--ctx", "512"]
    answers = []
    for argv in (["ask", "--seed", "1"], ["--seed", "1", "ask"], ["ask", "--seed", "3"]):
        assert main([*model, *argv, "--no-think", "hi"]) == 0
        answers.append(capsys.readouterr().out)
    assert answers[0] == answers[1] and len(answers[0]) > 100  # seed 1: a long answer, so a match means something
    assert answers[2] != answers[0]
    assert outcome(["ask", "--seed", "4294967296", "q"]) == ("refused", (2, "qwen-chat ask: error: argument --seed: "
                                                                           "must be a whole number from 0 to "
                                                                           "4294967295 (got '4294967296')"))
