"""A whole tool loop through the real engine: llama.cpp on the real Qwen2.5-Coder-0.5B, the real MCP test
server over stdio. The 0.5B model writes its calls as bare JSON rather than in <tool_call> tags, so the
first answer is made to begin with the call (GenerateRequest.prefill): the engine streams it, the splitter
finds it, and everything after that (the approval rule, the server, the result in the next prompt, the model's
answer from it, the KV cache reused across the rounds) is real."""

from __future__ import annotations

import dataclasses
import queue
import sys
from pathlib import Path
from typing import Any

from qwen_chat.config.mcp_config import ServerEntry
from qwen_chat.engines.llama import Engine
from qwen_chat.engines.protocol import EngineEvent, GenerateRequest, Loaded
from qwen_chat.session.chat import ChatSession
from qwen_chat.session.events import AnswerSaved, ToolLoopEnded
from qwen_chat.store.database import Store
from qwen_chat.tools.mcp_hub import McpHub

from helpers import events_until, write_settings

SERVER = Path(__file__).parent / "mcp_servers" / "stdio_server.py"
CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 1234, "b": 4321}}\n</tool_call>'


class FirstAnswerPrefilled:
    """The real engine, with the first answer made to begin with `CALL`."""

    def __init__(self) -> None:
        self.engine = Engine(lambda event: None)
        self.requests: list[GenerateRequest] = []

    @property
    def on_event(self) -> Any:
        return self.engine.on_event

    @on_event.setter
    def on_event(self, sink: Any) -> None:
        self.engine.on_event = sink

    def start(self) -> FirstAnswerPrefilled:
        self.engine.start()
        return self

    def load(self, request: Any) -> None:
        self.engine.load(request)

    def generate(self, request: GenerateRequest) -> None:
        if not self.requests:
            request = dataclasses.replace(request, prefill=CALL)
        self.requests.append(request)
        self.engine.generate(request)

    def stop(self) -> None:
        self.engine.stop()

    def shutdown(self, timeout: float = 10) -> None:
        self.engine.shutdown(timeout)


def test_a_real_model_runs_a_tool_loop_and_answers_from_the_result(real_model: Path, tmp_path: Path) -> None:
    write_settings('[tools]\nallow_tools = ["test/add"]\n')
    hub = McpHub([ServerEntry("test", "stdio", sys.executable, (str(SERVER),))], log_path=tmp_path / "mcp.log")
    hub.start()
    assert hub.wait_ready(60), hub.states()
    events: queue.Queue[EngineEvent] = queue.Queue()
    engine = FirstAnswerPrefilled()
    session = ChatSession(Store(tmp_path / "c.db"), events.put, engine=engine, tools=hub)  # type: ignore[arg-type]
    try:
        session.load_model(real_model, 4096)
        events_until(events, lambda e: isinstance(e, Loaded), 120)
        conversation = session.new_conversation()
        session.send(conversation.id, "What is 1234 + 4321? Use the add tool, then say the sum.")
        seen = events_until(events, lambda e: isinstance(e, ToolLoopEnded) or (
            isinstance(e, AnswerSaved) and not e.message.tool_calls), 300)
    finally:
        session.close()
        hub.close()
    saved = [e for e in seen if isinstance(e, AnswerSaved)]
    assert len(saved) == 2, [e for e in seen if not isinstance(e, AnswerSaved)][-3:]
    first, second = saved
    (called,) = Store(tmp_path / "c.db").messages(conversation.id)[1].tool_calls
    assert (called.name, called.status, called.result) == ("add", "ok", "5555")
    assert second.message.content.strip() and second.message.status in ("complete", "stopped")
    # the second round's prompt holds the first one, its call and the result: the KV cache had all of the
    # first prompt and answer, so llama.cpp only read what came after the call
    later = engine.requests[1].prompt
    assert later.startswith(engine.requests[0].prompt) and "<tool_response>\n5555\n</tool_response>" in later
    assert first.done is not None and second.done is not None
    assert second.done.prompt_tokens > first.done.prompt_tokens
    assert second.done.prompt_evaluated <= second.done.prompt_tokens - first.done.prompt_tokens + 8
