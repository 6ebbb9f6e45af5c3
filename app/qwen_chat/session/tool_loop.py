"""The tool side of an answer: what the model is offered, and what happens to the calls an answer ends with.

An answer that ends with calls is saved first (the calls with it, as pending), then each call in order is
checked (malformed, unknown tool, arguments against the tool's schema: the model is told why, nothing runs),
approved (a standing rule, or the user answering the approval prompt) and run on its server with a timeout.
When every call of the round has a result, the session starts the next answer of the loop. Esc stops it at any
point: the pending calls are marked stopped, a running one is cancelled.

All of this runs on one thread of its own ("tool-runner"): waiting for the user or a server never holds the
engine, the answer writer or the UI.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from qwen_chat.config.tool_settings import ToolSettings, add_rule, load_tool_settings
from qwen_chat.engines.protocol import Done
from qwen_chat.qwen3.tool_calls import ToolCall
from qwen_chat.session.events import Notice, SessionEvent, ToolApprovalNeeded, ToolCallChanged
from qwen_chat.store.database import Store
from qwen_chat.store.records import Conversation, Message, StoreError, ToolCallRecord
from qwen_chat.store.tool_calls import NewCall
from qwen_chat.tools.mcp_results import ToolResult, ToolSpec, validate_arguments

Decision = Literal["once", "tool", "server", "deny"]
STORE_LIMIT = 1_000_000  # characters of one result kept in the database; the model is sent less (result_limit)
DENIED = "The user denied this tool call; it did not run."
STOPPED = "The user stopped the answer before this call ran."


class ToolBox(Protocol):
    """What the session needs of the tools layer (tools.mcp_hub.McpHub is one)."""

    def tools(self) -> list[ToolSpec]: ...
    def call_async(self, server: str, tool: str, arguments: dict[str, Any],
                   timeout: float | None = None) -> Future[ToolResult]: ...


def offered(box: ToolBox | None, conversation: Conversation) -> dict[str, ToolSpec]:
    """The tools this conversation offers the model, by the name the model is told. A name two servers share is
    given as `server__name` for both, so no call is ambiguous."""
    if box is None:
        return {}
    specs = [s for s in box.tools() if conversation.tool_on(s.server, s.name)]
    counts = Counter(s.name for s in specs)
    return {(s.name if counts[s.name] == 1 else f"{s.server}__{s.name}"): s for s in specs}


def functions(tools: dict[str, ToolSpec]) -> tuple[dict[str, Any], ...]:
    """The function specs for the template's `tools=` (and an OpenAI server's `tools` field)."""
    return tuple(spec.function(name) for name, spec in tools.items())


def model_result(call: ToolCallRecord, limit: int) -> str:
    """What the model is sent for a call: its result, cut at `limit` characters with a note saying so."""
    if call.status == "denied":
        return DENIED
    if call.status == "stopped":
        return call.result or STOPPED
    text = call.result if call.status == "ok" else f"Error: {call.result}"
    if len(text) > limit:
        text = f"{text[:limit]}\n[the result was cut here: it is {len(text):,} characters, the first {limit:,} shown]"
    return text


def new_calls(answer_id: int, done: Done, tools: dict[str, ToolSpec]) -> list[NewCall]:
    """The calls of a saved answer as they go into the store: runnable ones pending, the others with their
    error already (told to the model as the call's result)."""
    calls = []
    for i, call in enumerate(done.tool_calls):
        call_id = call.call_id or f"call_{answer_id}_{i}"
        error = _why_not(call, tools, done.finish)
        status = "pending" if not error else ("stopped" if done.finish == "stopped" else "error")
        spec = tools.get(call.name)
        calls.append(NewCall(call_id, call.name, call.arguments, call.raw, status, error,
                             spec.server if spec is not None else ""))
    return calls


def _why_not(call: ToolCall, tools: dict[str, ToolSpec], finish: str) -> str:
    if finish == "stopped":
        return STOPPED
    if finish == "length":
        return "the answer reached its token limit inside this call, so it is incomplete; it did not run"
    if call.error:
        return f"{call.error}; it did not run"
    spec = tools.get(call.name)
    if spec is None:
        known = ", ".join(sorted(tools)) or "none"
        return f"there is no tool named {call.name!r} (the tools are: {known}); it did not run"
    invalid = validate_arguments(spec, call.arguments)
    return f"the arguments do not match the tool's schema: {invalid}; it did not run" if invalid else ""


@dataclass
class ToolRound:
    conversation_id: int
    answer: Message
    tools: dict[str, ToolSpec]
    rounds: int  # tool rounds of this turn so far, this one included
    next_answer: Callable[[], None]  # starts the next answer of the loop (with the answer slot still held)
    end: Callable[[str], None]  # releases the answer slot; the reason is told to the user ("" for none)


@dataclass
class _Waiting:
    call_id: int
    decided: threading.Event = field(default_factory=threading.Event)
    decision: Decision = "deny"


class ToolRunner:
    """Runs the calls of one round at a time on its own thread."""

    def __init__(self, store: Store, sink: Callable[[SessionEvent], None], box: ToolBox | None,
                 settings: Callable[[], ToolSettings] = load_tool_settings) -> None:
        self.store, self.sink, self.box, self.settings = store, sink, box, settings
        self._rounds: queue.Queue[ToolRound | None] = queue.Queue()
        self._stop = threading.Event()
        self._waiting: _Waiting | None = None
        self._running: Future[ToolResult] | None = None
        self._thread: threading.Thread | None = None

    def submit(self, round_: ToolRound) -> None:
        self._stop.clear()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tool-runner", daemon=True)
            self._thread.start()
        self._rounds.put(round_)

    def decide(self, call_id: int, decision: Decision) -> bool:
        """The user's answer to an approval prompt; False when that call is not waiting (any more)."""
        waiting = self._waiting
        if waiting is None or waiting.call_id != call_id:
            return False
        waiting.decision = decision
        waiting.decided.set()
        return True

    def stop(self) -> None:
        """Esc: no further call runs, a running one is cancelled, the loop ends after this round."""
        self._stop.set()
        waiting, running = self._waiting, self._running
        if waiting is not None:
            waiting.decided.set()
        if running is not None:
            running.cancel()

    def close(self) -> None:
        self.stop()
        if self._thread is not None:
            self._rounds.put(None)
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while (round_ := self._rounds.get()) is not None:
            try:
                self._round(round_)
            except StoreError as exc:
                round_.end(f"The tool calls could not be saved: {exc}")
            except Exception as exc:  # the thread must outlive any one round
                round_.end(f"The tool calls failed: {exc}")

    def _round(self, round_: ToolRound) -> None:
        settings = self.settings()
        for call in round_.answer.tool_calls:
            if call.status != "pending":
                continue
            if self._stop.is_set():
                self._change(call, "stopped", STOPPED)
                continue
            spec = round_.tools[call.name]
            if not settings.allows(spec.server, spec.name):
                decision = self._approval(call, spec, round_)
                if decision is None or decision == "deny":
                    self._change(call, "stopped" if decision is None else "denied",
                                 STOPPED if decision is None else DENIED)
                    continue
                if decision in ("tool", "server"):  # holds for this round's next calls at once, saved or not
                    settings = settings.with_rule(spec.server, spec.name if decision == "tool" else None)
            self._execute(call, spec, settings)
        if self._stop.is_set():
            round_.end("Stopped: the tool loop ended here.")
        elif round_.rounds >= settings.max_rounds:
            round_.end(f"The model called tools {settings.max_rounds} rounds in a row (tools.max_rounds in "
                       "settings.toml); the loop was stopped there.")
        else:
            round_.next_answer()

    def _approval(self, call: ToolCallRecord, spec: ToolSpec, round_: ToolRound) -> Decision | None:
        """The user's answer to the prompt for `call` (None: stopped); an "always" answer is saved as a rule."""
        waiting = self._waiting = _Waiting(call.id)
        try:
            self.sink(ToolApprovalNeeded(round_.conversation_id, call, spec.server, spec.description))
            waiting.decided.wait()
        finally:
            self._waiting = None
        if self._stop.is_set():
            return None
        if waiting.decision in ("tool", "server"):
            try:
                add_rule(spec.server, spec.name if waiting.decision == "tool" else None)
            except OSError as exc:  # the call is still allowed this once
                self.sink(Notice(f"The rule could not be saved: {exc}", error=True))
        return waiting.decision

    def _execute(self, call: ToolCallRecord, spec: ToolSpec, settings: ToolSettings) -> None:
        assert self.box is not None
        self._change(call, "running", server=spec.server)
        future = self._running = self.box.call_async(spec.server, spec.name, call.arguments,
                                                     timeout=settings.call_timeout)
        if self._stop.is_set():  # Esc came between the two lines above
            future.cancel()
        try:
            result = future.result()
        except BaseException:  # cancelled (Esc)
            self._change(call, "stopped", "The user cancelled this call while it ran.")
            return
        finally:
            self._running = None
        text = result.text
        kept = text[:STORE_LIMIT]
        self._change(call, "error" if result.is_error else "ok", kept,
                     truncated=result.truncated or len(kept) < len(text))

    def _change(self, call: ToolCallRecord, status: str, result: str | None = None, *, server: str | None = None,
                truncated: bool = False) -> None:
        record = self.store.set_tool_call(call.id, status, result, server=server, truncated=truncated)
        self.sink(ToolCallChanged(record))
