"""`qwen-chat ask` with tools asks for approval on the real terminal: the real command (no asker injected) runs
in a detached tmux session against the loopback replay server, which answers with a tool call, and the real MCP
test server over stdio. The question appears on the terminal, the key sent to it decides, and the call runs
or is refused.

Only a terminal shows this: the asker opens /dev/tty, and `open("/dev/tty", "r+")` fails on a terminal (a
text "r+" file needs a seekable one), which once read as "there is no terminal to ask on". stdin is /dev/null
and stdout and stderr go to files, so the answer can only have come from the terminal itself."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from replay_server import ReplayServer, chunk, finish

from helpers import TMUX, Tmux, wait_until

pytestmark = pytest.mark.skipif(TMUX is None, reason="needs tmux (apt-get install tmux)")
MCP_SERVER = Path(__file__).parent / "mcp_servers" / "stdio_server.py"
QUESTION = "Allow [o]nce, always this [t]ool, always this [s]erver, or [d]eny?"


class ToolThenText(ReplayServer):
    """Answers the first request with a call of the test server's `echo`, every later one with text."""

    @property  # type: ignore[override]
    def script(self) -> list[dict[str, Any]]:
        if len(self.requests) <= 1:
            call = {"index": 0, "id": "call-7", "type": "function",
                    "function": {"name": "echo", "arguments": '{"text": "from the tool"}'}}
            return [chunk(role="assistant"), {"object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}, finish("tool_calls")]
        return [chunk(role="assistant"), chunk(content="The echo said: done."), finish()]

    @script.setter
    def script(self, value: list[dict[str, Any]]) -> None:
        pass


@pytest.fixture
def engine() -> Iterator[ToolThenText]:
    server = ToolThenText().start()
    try:
        yield server
    finally:
        server.stop()


def ask_command(tmp_path: Path, url: str) -> str:
    """The real `qwen-chat ask`, its mcp.json naming the stdio test server; stdin from /dev/null, stdout and
    stderr to files, its exit status to a file once it ends."""
    config = tmp_path / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "mcp.json").write_text(json.dumps({"mcpServers": {
        "test": {"command": sys.executable, "args": [str(MCP_SERVER)]}}}), encoding="utf-8")
    env = {"QWEN_CHAT_DATA_DIR": str(tmp_path / "data"), "QWEN_CHAT_CONFIG_DIR": str(config),
           "TERM": "xterm-256color", "LANG": "C.UTF-8"}
    ask = shlex.join(["env", *(f"{k}={v}" for k, v in env.items()), sys.executable, "-m", "qwen_chat", "ask",
                      "--endpoint", url, "Echo something"])
    out, err, status = (shlex.quote(str(tmp_path / name)) for name in ("out", "err", "status"))
    return f"{ask} </dev/null >{out} 2>{err}; echo $? >{status}.part && mv {status}.part {status}"


@pytest.mark.parametrize(("keys", "ran"), [(("o", "Enter"), True), (("d", "Enter"), False), (("C-d",), False)],
                         ids=["once", "deny", "end-of-input"])
def test_ask_asks_on_the_terminal_and_the_key_decides(tmp_path: Path, engine: ToolThenText,
                                                      keys: tuple[str, ...], ran: bool) -> None:
    status = tmp_path / "status"
    tmux = Tmux("ask")
    try:
        tmux.start(ask_command(tmp_path, engine.url))

        def asked() -> str | bool:
            screen = tmux.screen()
            return screen if QUESTION in screen else status.exists()

        screen = wait_until(asked, timeout=60, what="the approval question on the terminal")
        assert screen is not True, (tmp_path / "err").read_text()  # it ended without asking
        assert "The model wants to run echo on test:" in screen and '"text": "from the tool"' in screen
        assert len(engine.requests) == 1  # the tool loop waits for the answer
        tmux.keys(*keys)
        wait_until(status.exists, timeout=60, what="qwen-chat ask to end")
    finally:
        tmux.close()
    err = (tmp_path / "err").read_text()
    assert status.read_text().strip() == "0", err
    assert (tmp_path / "out").read_text() == "The echo said: done.\n"
    assert "no terminal" not in err and "Traceback" not in err
    tool_message = engine.requests[-1]["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "call-7"
    if ran:
        assert tool_message["content"] == "from the tool"
    else:
        assert "denied" in tool_message["content"] and "from the tool" not in tool_message["content"]
