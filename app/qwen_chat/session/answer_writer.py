"""The answer writer: one thread that puts streaming answers into the store.

The engine thread must never wait on SQLite: a busy database (another window's transaction, a slow disk) would
stall generation for as long as the lock is held. The session hands partial saves and the final save to this
thread instead. Partial saves of one message coalesce (only the newest text is written); jobs (the final
save with its retries, the context marker) run in the order they were submitted, each after the partial saves
that were pending before it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from qwen_chat.engines.protocol import Done
from qwen_chat.qwen3.thinking import StreamText
from qwen_chat.session.events import Notice
from qwen_chat.store.database import Store
from qwen_chat.store.records import Message, Stats, StoreError

log = logging.getLogger("qwen_chat.session.answer_writer")


class AnswerWriter:
    thread_name = "answer-writer"

    def __init__(self, store: Store) -> None:
        self._store = store
        self._wake = threading.Condition()
        self._partial: dict[int, StreamText] = {}  # message id -> its text; the newest request wins
        self._jobs: deque[Callable[[], None]] = deque()
        self._closed = False
        # Started by the first save, not here: a session that is built and closed without an answer (a test,
        # `ask` failing to load, a window closed at once) never owns a thread.
        self._thread: threading.Thread | None = None

    def save_partial(self, message_id: int, text: StreamText) -> None:
        """Write this answer's text as it is when the writer gets to it; returns at once."""
        with self._wake:
            self._partial[message_id] = text
            self._start_once()
            self._wake.notify()

    def submit(self, job: Callable[[], None]) -> None:
        """Run `job` on the writer thread, after the partial saves asked for so far."""
        with self._wake:
            self._jobs.append(job)
            self._start_once()
            self._wake.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Finish what was asked for, then end the thread (if it ever started)."""
        with self._wake:
            self._closed = True
            thread = self._thread
            self._wake.notify()
        if thread is not None and threading.current_thread() is not thread:
            thread.join(timeout)

    def _start_once(self) -> None:
        """Start the thread if this is the first work; called with `_wake` held, so two first saves on two
        threads start one thread between them. None starts after close: work then is dropped, as it was when
        the thread had already ended."""
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._partial or self._jobs or self._closed):
                    self._wake.wait()
                partial, self._partial = self._partial, {}
                job = self._jobs.popleft() if self._jobs else None
                if job is None and not partial and self._closed:
                    return
            for message_id, text in partial.items():
                self._write_partial(message_id, text)
            if job is not None:
                try:
                    job()
                except Exception:  # the thread must outlive any one job
                    log.exception("answer writer job failed")

    def _write_partial(self, message_id: int, text: StreamText) -> None:
        try:
            self._store.save_partial(message_id, text.thinking, text.answer)
        except StoreError as exc:  # a busy database only delays this save; the final one retries
            log.info("partial save of message %s skipped: %s", message_id, exc)


def save_final(store: Store, message_id: int, done: Done | None, streamed: StreamText, error: str,
               tell: Callable[[Notice], object]) -> Message | None:
    """Store an answer's final state (retried while the database is busy) and return it as stored; None when
    it cannot be read back (the user is told why). `done` is None when generation failed with `error`."""
    thinking = done.thinking if done else streamed.thinking
    answer = done.answer if done else streamed.answer
    status, closed, stats = "failed", False, Stats()
    if done is not None:
        status = {"stop": "complete", "length": "stopped", "stopped": "stopped"}.get(done.finish, "complete")
        if done.finish == "length":
            error = f"reached the output limit ({done.completion_tokens:,} tokens)"
        closed = done.thinking_closed
        stats = Stats(done.prompt_tokens, done.completion_tokens, done.prompt_seconds, done.generation_seconds,
                      done.tokens_per_second)
    for attempt in range(5):
        try:
            store.finish_answer(message_id, status, thinking, answer, closed, stats, error,
                                thinking_cut_at=done.thinking_cut_at if done else None)
            break
        except StoreError as exc:
            if attempt == 4:
                tell(Notice(f"The answer could not be saved: {exc}", error=True))
            time.sleep(0.2 * (attempt + 1))
    try:
        return store.message(message_id)
    except StoreError as exc:
        tell(Notice(str(exc), error=True))
        return None
