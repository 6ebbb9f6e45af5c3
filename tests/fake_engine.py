"""FakeEngine: a scripted engine for UI and session tests, so that they are deterministic and fast.

It speaks the real protocol (engines/protocol.py) from the real request loop (engines/worker.py), on its own
thread, like llama.cpp's engine: progress and Loaded for a load; for each generation Trimmed when the reply
says the context is full, the scripted reply's thinking and answer as Token events that share one StreamText,
then Done (or Failed). Esc (`stop`) ends a reply
early with finish "stopped", as the real engine does. What it cannot fake is llama.cpp: tests about the engine
itself use the real model.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from qwen_chat.engines.protocol import (
    Done,
    EventSink,
    Failed,
    GenerateRequest,
    Loaded,
    LoadProgress,
    LoadRequest,
    Token,
    Trimmed,
)
from qwen_chat.engines.worker import RequestWorker
from qwen_chat.qwen3.thinking import STOP_THINKING, Part, StreamText
from qwen_chat.qwen3.tool_calls import ToolCallSplitter


@dataclass(frozen=True)
class Reply:
    """One scripted answer. Text is streamed `chars` characters per token, `delay` seconds apart."""

    answer: str = "Hello from the fake engine."
    thinking: str = ""
    chars: int = 4
    delay: float = 0.0
    fail: str | None = None  # a generation error after the text: Failed(request_id, fail)
    finish: str = "stop"  # or "length"
    wait_for_stop: bool = False  # after the text, keep "generating" until stop() (an answer still streaming)
    trim: int = 0  # the oldest turns left out, as when the conversation outgrew the context (a Trimmed event)


@dataclass
class FakeEngine(RequestWorker):
    thread_name = "llama-engine"  # the session treats it as the local engine
    replies: deque[Reply] = field(default_factory=deque)
    load_failure: str | None = None
    on_event: EventSink = lambda event: None
    n_ctx: int = 4096  # as loaded
    requests: list[Any] = field(default_factory=list)  # every request, in order (tests read the prompts)
    _queue: queue.Queue[Any] = field(default_factory=queue.Queue)
    _cancel: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @classmethod
    def scripted(cls, replies: Iterable[Reply] = (), load_failure: str | None = None) -> FakeEngine:
        return cls(replies=deque(replies), load_failure=load_failure)

    def _load(self, request: LoadRequest) -> None:
        self.requests.append(request)
        self.n_ctx = request.n_ctx
        self._emit(LoadProgress(0.5))
        if self.load_failure is not None:
            self._emit(Failed(None, self.load_failure))
            return
        self._emit(Loaded(request.model_path, request.n_ctx, request.n_gpu_layers, 0.01))

    def _generate(self, request: GenerateRequest) -> None:
        self.requests.append(request)
        self._cancel.clear()
        reply = self.replies.popleft() if self.replies else Reply()
        started = time.monotonic()
        run = _Run(request.request_id, StreamText(), calls=ToolCallSplitter() if request.tools else None)
        if reply.trim and request.trim is not None:  # the real engine falls back on a shorter prompt the same way
            dropped = min(reply.trim, request.trim.count - 1)
            prompt_tokens = max(1, len(request.trim.render(dropped)) // 4)
            self._emit(Trimmed(request.request_id, dropped, prompt_tokens, self.n_ctx))
        for part, text in _script(reply, request.thinking_budget):
            if self._cancel.is_set():
                break
            inserted = text is STOP_THINKING  # the budget is used up: the instruction the real engine inserts
            if inserted:  # (as there: part of the thinking text, not a thinking token the model generated)
                run.cut_at = run.stream.length(Part.THINKING)
                text = STOP_THINKING.split("</think>")[0].rstrip("\n")
            for token in run.tokens_of(part, text, counted=not inserted):
                self._emit(token)
            if reply.delay:
                time.sleep(reply.delay)
        for token in run.flush():
            self._emit(token)
        while reply.wait_for_stop and not self._cancel.wait(0.01):
            pass
        if reply.fail is not None and not self._cancel.is_set():
            self._emit(Failed(request.request_id, reply.fail))
            return
        self._emit(run.done(request, "stopped" if self._cancel.is_set() else reply.finish, bool(reply.thinking),
                            time.monotonic() - started, self.n_ctx))

    def _shutting_down(self) -> None:
        pass


def _pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def _script(reply: Reply, budget: int) -> list[tuple[Part, str]]:
    """The reply's tokens; with a thinking budget, thinking stops after `budget` tokens (then STOP_THINKING)."""
    thinking = _pieces(reply.thinking, reply.chars)
    cut = 0 < budget < len(thinking)
    steps = [(Part.THINKING, piece) for piece in (thinking[:budget] if cut else thinking)]
    if cut:
        steps.append((Part.THINKING, STOP_THINKING))
    return steps + [(Part.ANSWER, piece) for piece in _pieces(reply.answer, reply.chars)]


@dataclass
class _Run:
    """One generation's text and counts, as the real engine keeps them."""

    request_id: int
    stream: StreamText
    tokens: int = 0
    thinking_tokens: int = 0
    cut_at: int | None = None
    calls: ToolCallSplitter | None = None  # when tools were offered: calls are split out of the answer, as the
    # real engines' ThinkingSplitter does

    def tokens_of(self, part: Part, text: str, counted: bool = True) -> list[Token]:
        if part is not Part.ANSWER or self.calls is None:
            return [self.token(part, text, counted)]
        pieces = self.calls.feed(text)
        self.tokens += counted and not pieces  # a token held back (a cut tag) was still generated
        return [self.token(Part.TOOL_CALL if kind == "call" else Part.ANSWER, piece, counted and i == 0)
                for i, (kind, piece) in enumerate(pieces)]

    def flush(self) -> list[Token]:
        pieces = self.calls.finish() if self.calls is not None else []
        return [self.token(Part.TOOL_CALL if kind == "call" else Part.ANSWER, piece, False) for kind, piece in pieces]

    def token(self, part: Part, text: str, counted: bool = True) -> Token:
        self.stream.append(part, text)
        self.tokens += counted
        self.thinking_tokens += counted and part is Part.THINKING
        return Token(self.request_id, part, text, self.thinking_tokens, self.stream)

    def done(self, request: GenerateRequest, finish: str, saw_thinking: bool, seconds: float, n_ctx: int) -> Done:
        seconds = max(seconds, 1e-6)
        prompt_tokens = max(1, len(request.prompt) // 4)
        closed = saw_thinking and (finish == "stop" or self.cut_at is not None)
        return Done(self.request_id, finish, self.stream.thinking, self.stream.answer, saw_thinking, closed,
                    prompt_tokens, prompt_tokens, self.tokens, 0.001, seconds, prompt_tokens + self.tokens, n_ctx,
                    self.tokens / seconds, self.thinking_tokens, self.cut_at,
                    tool_calls=tuple(self.stream.tool_calls()))
