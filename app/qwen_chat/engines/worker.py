"""One thread per engine answers queued requests in order, with events: the loop llama.py and http.py share."""

from __future__ import annotations

import logging
import queue
import threading
from abc import ABC, abstractmethod
from typing import Any

from qwen_chat.engines.protocol import EngineEvent, EventSink, Failed, GenerateRequest, LoadRequest

log = logging.getLogger("qwen_chat.engines")
_SHUTDOWN = object()


class RequestWorker(ABC):
    """One thread answers queued requests in order with events: the loop the local and HTTP engines share.

    Subclasses are dataclasses with `on_event`, `_queue`, `_cancel` and `_thread` fields, implement `_load` and
    `_generate`, and may implement `_shutting_down`.
    """

    thread_name = "engine"
    on_event: EventSink
    _queue: queue.Queue[Any]
    _cancel: threading.Event
    _thread: threading.Thread | None

    def start(self) -> Any:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def load(self, request: LoadRequest) -> None:
        self._cancel.clear()
        self._queue.put(request)

    def generate(self, request: GenerateRequest) -> None:
        self._queue.put(request)

    def stop(self) -> None:
        """Stop the running generation or load; safe from any thread, returns at once."""
        self._cancel.set()

    def shutdown(self, timeout: float = 10.0) -> None:
        self.stop()
        self._queue.put(_SHUTDOWN)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _SHUTDOWN:
                self._shutting_down()
                return
            try:
                if isinstance(item, LoadRequest):
                    self._load(item)
                elif isinstance(item, GenerateRequest):
                    self._generate(item)
            except Exception as exc:  # the thread must survive anything a request does
                log.exception("%s request failed", self.thread_name)
                self._emit(Failed(getattr(item, "request_id", None), f"{type(exc).__name__}: {exc}"))

    def _emit(self, event: EngineEvent) -> None:
        try:
            self.on_event(event)
        except Exception:
            log.exception("event handler failed")

    @abstractmethod
    def _load(self, request: LoadRequest) -> None:
        """On the worker thread: load (or connect), then emit Loaded or Failed."""

    @abstractmethod
    def _generate(self, request: GenerateRequest) -> None:
        """On the worker thread: answer, emitting Token events and then Done or Failed."""

    def _shutting_down(self) -> None:  # noqa: B027 (optional: the HTTP engine has nothing to release)
        """On the worker thread, after the last request."""
