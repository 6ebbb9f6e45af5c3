"""`qwen-chat ask` with MCP tools: the chat's tool loop against a loopback OpenAI-compatible server (which
streams tool_calls deltas the way vLLM and llama-server do) and the real MCP test server over stdio."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest

from qwen_chat.cli.ask import ask as ask_command
from qwen_chat.cli.ask_tools import AskTools
from qwen_chat.config.mcp_config import ServerEntry
from qwen_chat.session.sources import Server
from replay_server import ReplayServer, chunk, finish

SERVER = Path(__file__).parent / "mcp_servers" / "stdio_server.py"
ENTRY = ServerEntry("test", "stdio", sys.executable, (str(SERVER),))


def tool_call_script(name: str, arguments: str) -> list[dict[str, Any]]:
    call = {"index": 0, "id": "call-9", "type": "function", "function": {"name": name, "arguments": arguments}}
    return [chunk(role="assistant"), {"object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}, finish("tool_calls")]


class TwoStep(ReplayServer):
    """Answers the first request with a tool call, every later one with text."""

    def __init__(self, name: str, arguments: str) -> None:
        super().__init__()
        self.first = tool_call_script(name, arguments)

    @property  # type: ignore[override]
    def script(self) -> list[dict[str, Any]]:
        if len(self.requests) <= 1:
            return self.first
        return [chunk(role="assistant"), chunk(content="The echo said: done."), finish()]

    @script.setter
    def script(self, value: list[dict[str, Any]]) -> None:
        pass


@pytest.fixture
def replay() -> Any:
    server = TwoStep("echo", '{"text": "from the tool"}').start()
    yield server
    server.stop()


def ask(replay: TwoStep, tools: AskTools, asker: Any = lambda event: None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = ask_command(Server(replay.url, None, None), "Echo something", tools=tools, think=None,
                       show_thinking=False, out=out, err=err, asker=asker)
    return code, out.getvalue(), err.getvalue()


def test_without_a_terminal_or_a_rule_the_call_is_refused_and_stderr_says_how_to_allow_it(replay: TwoStep) -> None:
    code, out, err = ask(replay, AskTools([ENTRY]))
    assert code == 0 and out.strip() == "The echo said: done."
    assert "not run" in err and "--allow-tool echo" in err and "--allow-server test" in err
    sent = replay.requests[-1]["messages"]
    assert sent[-1]["role"] == "tool" and "denied" in sent[-1]["content"]
    assert {t["function"]["name"] for t in replay.requests[0]["tools"]} >= {"echo", "add"}


def test_allow_tool_runs_the_call_and_its_result_goes_back_to_the_server(replay: TwoStep) -> None:
    code, out, err = ask(replay, AskTools([ENTRY], allow_tools=("echo",)))
    assert code == 0 and out.strip() == "The echo said: done." and "not run" not in err
    last = replay.requests[-1]["messages"]
    assert last[-2]["tool_calls"][0]["function"] == {"name": "echo", "arguments": '{"text": "from the tool"}'}
    assert last[-1] == {"role": "tool", "content": "from the tool", "tool_call_id": "call-9"}


def test_on_a_terminal_the_user_is_asked(replay: TwoStep) -> None:
    asked: list[str] = []

    def answer(event: Any) -> str:
        asked.append(f"{event.call.name} on {event.server}")
        return "once"

    code, _, _ = ask(replay, AskTools([ENTRY]), asker=answer)
    assert code == 0 and asked == ["echo on test"]
    assert replay.requests[-1]["messages"][-1]["content"] == "from the tool"


def test_a_server_that_is_down_is_reported_and_the_answer_still_comes(replay: TwoStep, tmp_path: Path) -> None:
    broken = ServerEntry("broken", "stdio", str(tmp_path / "no-such-command"))
    code, out, err = ask(replay, AskTools([ENTRY, broken], allow_servers=("test",)))
    assert code == 0 and "MCP server broken is down" in err and out.strip() == "The echo said: done."


def test_the_ask_command_offers_mcp_json_servers_and_takes_allow_options(
        replay: TwoStep, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from qwen_chat.cli.main import main

    config = tmp_path / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "mcp.json").write_text(json.dumps({"mcpServers": {
        "test": {"command": sys.executable, "args": [str(SERVER)]}, "bad": {"args": "not a list"}}}),
        encoding="utf-8")
    assert main(["ask", "--endpoint", replay.url, "--allow-server", "test", "--seed", "5", "Echo something"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "The echo said: done."
    assert "mcpServers.bad" in captured.err  # the broken entry is reported and skipped
    assert replay.requests[-1]["messages"][-1]["content"] == "from the tool"
    assert [request["seed"] for request in replay.requests] == [5, 5]  # --seed: each step of the tool loop
    replay.requests.clear()
    assert main(["--seed", "6", "ask", "--endpoint", replay.url, "--no-tools", "Echo something"]) == 0
    assert "tools" not in replay.requests[0] and replay.requests[0]["seed"] == 6
