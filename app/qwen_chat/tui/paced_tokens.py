"""Tokens drawn in paced batches: the transcript's part that decides when the streamed text is drawn.

Tokens wait in the inbox (tui/session_events.py); one TokensWaiting message says a batch is there. Drawing
is paced by what it costs, so the UI never takes the CPU the model needs and batches grow instead of queueing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from textual.timer import Timer

from qwen_chat.engines.protocol import Token
from qwen_chat.qwen3.thinking import Part
from qwen_chat.session.chat import ChatSession
from qwen_chat.tui import gc_pause
from qwen_chat.tui.messages import AssistantMessage
from qwen_chat.tui.session_events import Inbox
from qwen_chat.tui.status_bar import StatusBar

# Rendering paces itself: after each render the next waits until the UI thread's share of a core would stay at
# about UI_SHARE (the CPU a render cycle took, over UI_SHARE), within MIN_GAP..MAX_GAP. On a machine whose cores
# all decode, every millisecond the UI takes is one the model does not get; when rendering gets slower, batches
# grow instead of queueing up.
UI_SHARE = 0.04
MIN_GAP = 1 / 15
MAX_GAP = 0.5


class Drawing(Protocol):
    """What the pacer draws on: the transcript (transcript.py)."""

    live: AssistantMessage | None
    session: ChatSession

    def shown(self) -> bool: ...

    def set_timer(self, delay: float, callback: Callable[[], Awaitable[None]]) -> Timer: ...


class TokenPacer:
    """Held by the transcript: draws the inbox's tokens on its live answer, at a pace set by their cost."""

    def __init__(self, transcript: Drawing, inbox: Inbox, status: StatusBar) -> None:
        self.transcript = transcript
        self.inbox = inbox
        self.status = status
        self._render_timer: Timer | None = None
        self._next_render = 0.0
        self._cpu_mark = time.thread_time()

    async def tokens_waiting(self) -> None:
        wait = self._next_render - time.monotonic()
        if wait > 0:  # drawn a moment ago: this batch waits and grows
            if self._render_timer is None:
                self._render_timer = self.transcript.set_timer(wait, self.draw_tokens)
            return
        await self.draw_tokens()

    async def draw_tokens(self) -> None:
        if self._render_timer is not None:
            self._render_timer.stop()
        self._render_timer = None
        cpu, now = time.thread_time(), time.monotonic()
        cycle = cpu - self._cpu_mark  # what the UI thread did since the last drawing began (that one included)
        if now - self._next_render > MAX_GAP:
            cycle = 0.0  # the first drawing after a pause: idle time says nothing about the cost of one
        self._cpu_mark = cpu
        thinking_before = self.status.thinking_tokens
        await self.draw(self.inbox.take_tokens())
        self._next_render = time.monotonic() + min(MAX_GAP, max(MIN_GAP, cycle / UI_SHARE))
        if self.transcript.live is not None:  # an answer is being drawn
            gc_pause.hold()
        if self.status.thinking_tokens != thinking_before:  # answer tokens alone change nothing there
            self.status.show(self.transcript.session)
        if self.inbox.drawn():
            self.schedule_tokens()

    def schedule_tokens(self) -> None:
        if self._render_timer is None:
            # at least a millisecond: Textual's timer divides by its delay
            self._render_timer = self.transcript.set_timer(max(0.001, self._next_render - time.monotonic()),
                                                           self.draw_tokens)

    async def draw(self, tokens: list[Token]) -> None:
        live = self.transcript.live
        if not tokens or live is None or not self.transcript.shown():
            return  # nothing new, or the app is closing while the engine still reports
        batch: list[tuple[Part, str]] = []
        for token in tokens:
            if token.stream is not None:
                live.follow(token.stream)
            if batch and batch[-1][0] is token.part:
                batch[-1] = (token.part, batch[-1][1] + token.text)
            else:
                batch.append((token.part, token.text))
        self.status.thinking_tokens = live.thinking_tokens = tokens[-1].thinking_tokens
        for part, text in batch:
            if part is Part.THINKING:
                live.add_thinking(text)
            elif part is Part.TOOL_CALL:
                live.add_tool_call(text)
            else:
                await live.add_answer(text)
