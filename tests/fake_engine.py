"""FakeEngine: a scripted engine for UI and session tests, so that they are deterministic and fast.

It speaks the real protocol (engines/protocol.py) from the real request loop (engines/worker.py), on its own
thread, like llama.cpp's engine: progress and Loaded for a load; for each generation the scripted reply's
thinking and answer as Token events that share one StreamText, then Done (or Failed). Esc (`stop`) ends a reply
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
)
from qwen_chat.engines.worker import RequestWorker
from qwen_chat.qwen3.thinking import Part, StreamText


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
        stream, tokens, thinking_tokens = StreamText(), 0, 0
        pieces = [(Part.THINKING, p) for p in _pieces(reply.thinking, reply.chars)]
        pieces += [(Part.ANSWER, p) for p in _pieces(reply.answer, reply.chars)]
        for part, text in pieces:
            if self._cancel.is_set():
                break
            stream.append(part, text)
            tokens += 1
            thinking_tokens += part is Part.THINKING
            self._emit(Token(request.request_id, part, text, thinking_tokens, stream))
            if reply.delay:
                time.sleep(reply.delay)
        while reply.wait_for_stop and not self._cancel.wait(0.01):
            pass
        if reply.fail is not None and not self._cancel.is_set():
            self._emit(Failed(request.request_id, reply.fail))
            return
        seconds = max(time.monotonic() - started, 1e-6)
        finish = "stopped" if self._cancel.is_set() else reply.finish
        prompt_tokens = max(1, len(request.prompt) // 4)
        self._emit(Done(request.request_id, finish, stream.thinking, stream.answer, bool(reply.thinking),
                        bool(reply.thinking) and finish == "stop", prompt_tokens, prompt_tokens, tokens, 0.001,
                        seconds, prompt_tokens + tokens, self.n_ctx, tokens / seconds, thinking_tokens))

    def _shutting_down(self) -> None:
        pass


def _pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]
