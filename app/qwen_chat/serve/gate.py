"""The one engine behind the server: loaded with the app's own load path, answering one request at a time.

Requests wait their turn in arrival order (an asyncio lock is FIFO); past `queue_limit` waiting ones a new request
is refused with `QueueFull` (the client gets a 503 with Retry-After). The engine's events arrive on its thread and
are handed to the waiting request's queue on the event loop. The turn ends when the engine reports the answer's
end, not when the client goes: a cancelled request stops the engine and keeps the turn until the engine is idle,
so the next request never finds it still decoding.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from qwen_chat.config.engine_settings import load_engine_settings
from qwen_chat.engines.protocol import Done, EngineEvent, Failed, GenerateRequest, Loaded, Token
from qwen_chat.serve.prompting import ModelFacts
from qwen_chat.session.events import Notice, SessionEvent
from qwen_chat.session.model_side import ModelSide
from qwen_chat.session.sources import LocalModel

log = logging.getLogger("qwen_chat.serve")


class QueueFull(Exception):
    """Too many requests are waiting already."""


@dataclass
class Ticket:
    """One request's turn: its events as they come, and a way to stop it."""

    request_id: int
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[EngineEvent] = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    ended: bool = False


class EngineGate:
    def __init__(self, source: LocalModel, queue_limit: int = 8,
                 on_notice: Callable[[str], None] = lambda _text: None) -> None:
        self.queue_limit = queue_limit
        self.waiting = 0
        self.last_done: Done | None = None  # the engine's report on the last answer (its counters)
        self.answers = 0
        self._on_notice = on_notice
        self._turn = asyncio.Lock()
        self._tickets: dict[int, Ticket] = {}
        self._ids = itertools.count(1)
        self._loaded = threading.Event()
        self._load_error: str | None = None
        self.model = ModelSide(self._sink, self._on_event, source)
        self.drafting = load_engine_settings().speculative  # as the chat's session does; F5 is the chat's own

    # -- loading (the app's load: the plan the CLI made, the retry with fewer GPU layers) --

    def load(self, timeout: float | None = None) -> str | None:
        """Load the model and wait for it; None when it is ready, else why not."""
        self.model.open()
        if not self._loaded.wait(timeout):
            return "the model did not finish loading in time"
        return self._load_error

    def facts(self) -> ModelFacts:
        assert self.model.template is not None, "the model is loaded before requests are served"
        return ModelFacts(self.model.template, self.model.variant, self.model.quantized, self.drafting)

    def close(self) -> None:
        self.model.close()

    # -- requests (on the event loop) --

    @property
    def busy(self) -> bool:
        return self._turn.locked()

    def check_room(self) -> None:
        """QueueFull when the request would have to wait behind `queue_limit` others."""
        if self._turn.locked() and self.waiting >= self.queue_limit:
            raise QueueFull(f"{self.waiting} requests are waiting already")

    async def start(self, build: Callable[[int], GenerateRequest]) -> Ticket:
        """Wait for the turn, then hand the engine `build(request_id)`. A BadRequest from `build` gives the
        turn back. Cancelling the wait (the client left) leaves the queue."""
        self.check_room()
        self.waiting += 1
        try:
            await self._turn.acquire()
        finally:
            self.waiting -= 1
        ticket = Ticket(next(self._ids), asyncio.get_running_loop())
        try:
            request = build(ticket.request_id)
        except BaseException:
            self._turn.release()
            raise
        self._tickets[ticket.request_id] = ticket
        self.model.loaded_engine().generate(request)
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Stop the ticket's answer (a client that left, a stop string); the turn ends with the engine's Done."""
        if ticket.ended or ticket.cancelled:
            return
        ticket.cancelled = True
        self.model.loaded_engine().stop()

    # -- engine thread --

    def _sink(self, event: SessionEvent) -> None:
        if isinstance(event, Notice):
            self._on_notice(event.text)

    def _on_event(self, event: EngineEvent) -> None:
        if isinstance(event, Loaded):
            self._load_error = None
            self._loaded.set()
            return
        if isinstance(event, Failed) and event.request_id is None:
            self._load_error = event.message
            self._loaded.set()
            return
        ticket = self._tickets.get(getattr(event, "request_id", -1))
        if ticket is None:
            return
        if ticket.cancelled and isinstance(event, Token):
            # the stop came before the engine began this request (it clears the flag when it begins): again
            self.model.loaded_engine().stop()
        ticket.loop.call_soon_threadsafe(self._deliver, ticket, event)

    # -- event loop --

    def _deliver(self, ticket: Ticket, event: EngineEvent) -> None:
        ticket.events.put_nowait(event)
        if isinstance(event, (Done, Failed)):
            ticket.ended = True
            self._tickets.pop(ticket.request_id, None)
            if isinstance(event, Done):
                self.last_done = event
                self.answers += 1
            self._turn.release()
