"""The engine thread never waits on SQLite: every store write of a streaming answer is the writer thread's."""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from qwen_chat.engines.protocol import Loaded, Token
from qwen_chat.qwen3.thinking import Part, StreamText
from qwen_chat.session import chat as chat_session
from qwen_chat.session.answer_writer import AnswerWriter
from qwen_chat.session.chat import ChatSession
from qwen_chat.session.events import AnswerSaved
from qwen_chat.session.sources import LocalModel
from qwen_chat.store.database import Store

from fake_engine import FakeEngine, Reply
from helpers import events_until


class ThreadRecordingStore(Store):
    """A real Store that notes which thread called each of its methods."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.calls: list[tuple[str, str]] = []

    def __getattribute__(self, name: str):  # noqa: ANN204 - a transparent wrapper
        attribute = super().__getattribute__(name)
        calls = super().__getattribute__("__dict__").get("calls")
        if callable(attribute) and not name.startswith("_") and calls is not None:

            def recorded(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
                calls.append((name, threading.current_thread().name))
                return attribute(*args, **kwargs)

            return recorded
        return attribute


def _loaded_session(store: Store, model: Path, events: queue.Queue) -> ChatSession:
    session = ChatSession(store, events.put)
    session.load_model(model, 512)
    _until(events, Loaded)
    return session


def _until(events: queue.Queue, kind: type, timeout: float = 60) -> list:
    """The session's events up to the first `kind`, that one last."""
    return events_until(events, lambda event: isinstance(event, kind), timeout, what=kind.__name__)


def test_the_session_never_calls_the_store_on_the_engine_thread(tiny_models: dict[str, Path], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chat_session, "SAVE_EVERY", 0.0)  # a partial save after every token
    store = ThreadRecordingStore(tmp_path / "c.db")
    events: queue.Queue = queue.Queue()
    session = _loaded_session(store, tiny_models["hybrid"], events)
    conversation = session.new_conversation()
    store.calls.clear()
    # The tiny model's weights are random: without a seed one answer may end after a token. Seed 0 makes it
    # stream 37 tokens of noise (thinking and answer) to this question, each a partial save.
    session.seed = 0
    session.send(conversation.id, "Hello there")
    seen = _until(events, AnswerSaved)
    session.close()
    assert sum(isinstance(e, Token) for e in seen) > 3
    by_thread = {}
    for name, thread in store.calls:
        by_thread.setdefault(thread, set()).add(name)
    assert "llama-engine" not in by_thread, by_thread  # the engine thread never touched SQLite
    assert {"save_partial", "finish_answer"} <= by_thread["answer-writer"]
    saved = seen[-1].message
    assert saved.status in ("complete", "stopped") and saved.content + saved.thinking
    assert saved.sampling["seed"] == 0  # the session's seed reached the engine, and is kept with the answer


def test_a_locked_database_does_not_stall_generation(real_model: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process holds the database while the answer streams: tokens keep coming (the lock is held until
    a dozen have, however slow the machine), and the answer is saved once the lock goes."""
    monkeypatch.setattr(chat_session, "SAVE_EVERY", 0.0)
    db = tmp_path / "c.db"
    store = Store(db, busy_timeout=0.5)
    events: queue.Queue = queue.Queue()
    session = _loaded_session(store, real_model, events)
    conversation = session.new_conversation()
    blocker = sqlite3.connect(db, timeout=5)
    session.send(conversation.id, "Write a long story about a dragon who bakes bread.")
    blocker.execute("BEGIN EXCLUSIVE")  # after the user's message is saved: the answer streams into a locked db
    locked_at = time.monotonic()
    tokens_while_locked = 0
    try:  # a condition, not a time: two copies of the suite on 2 cores decode a few tokens a second
        while tokens_while_locked <= 10 and time.monotonic() - locked_at < 120:
            try:
                event = events.get(timeout=0.1)
            except queue.Empty:
                continue
            tokens_while_locked += isinstance(event, Token)
            assert not isinstance(event, AnswerSaved), "saved while the database was locked?"
    finally:
        blocker.rollback()
        blocker.close()
    session.stop()  # the story may go on for minutes: what matters is that it is saved after the lock
    saved = _until(events, AnswerSaved, timeout=60)[-1].message
    session.close()
    assert tokens_while_locked > 10  # generation went on while every write waited
    assert saved.status in ("complete", "stopped") and saved.content + saved.thinking
    assert Store(db).message(saved.id).content == saved.content


def test_partial_saves_coalesce_and_come_before_the_final_job(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    conversation = store.create_conversation()
    store.add_user_message(conversation.id, "q")
    answer = store.start_answer(conversation.id, "m", "no_think", {})
    writes: list[str] = []
    real_save = store.save_partial

    def slow_save(message_id: int, thinking: str, text: str) -> None:
        writes.append(text)
        time.sleep(0.05)
        real_save(message_id, thinking, text)

    store.save_partial = slow_save  # type: ignore[method-assign]
    writer = AnswerWriter(store)
    text = StreamText()
    for i in range(200):
        text.append(Part.ANSWER, f"{i} ")
        writer.save_partial(answer.id, text)
    finished = threading.Event()
    order: list[str] = []
    writer.submit(lambda: (order.append(store.message(answer.id).content), finished.set()))
    assert finished.wait(10)
    writer.close()
    assert 1 <= len(writes) < 20  # 200 requests, a few writes: each takes the newest text
    assert writes[-1] == text.answer and order == [text.answer]  # the job ran after the last partial save


def test_a_new_session_starts_no_thread_until_its_first_answer(tiny_models: dict[str, Path],
                                                               tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    before = set(threading.enumerate())
    events: queue.Queue = queue.Queue()
    session = ChatSession(store, events.put, engine=FakeEngine.scripted([Reply("Saved by the writer.")]),
                          source=LocalModel(tiny_models["none"], 512))
    assert set(threading.enumerate()) == before  # built, not yet used: nothing runs
    session.open()
    _until(events, Loaded)
    assert [t.name for t in set(threading.enumerate()) - before] == ["llama-engine"]  # the engine's only
    conversation = session.new_conversation()
    session.send(conversation.id, "Hello")
    saved = _until(events, AnswerSaved)[-1].message
    writers = [t for t in set(threading.enumerate()) - before if t.name == AnswerWriter.thread_name]
    session.close()
    assert (saved.status, saved.content) == ("complete", "Saved by the writer.")
    assert writers and not any(t.is_alive() for t in writers)  # started by the answer, ended by close


def test_a_writer_that_never_started_closes_at_once(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    writer = AnswerWriter(Store(tmp_path / "c.db"))
    writer.close()
    writer.submit(lambda: None)  # after close: dropped, and no thread starts for it
    assert set(threading.enumerate()) == before
