"""Two loads in one process (issue 21): the app once opened its model twice at start, two engines loaded at once,
and the process crashed inside llama.cpp's loader. Loads now wait for each other (llama_setup.LOAD_LOCK), the
progress callback and buffer overrides are set per `Llama` object instead of by patching llama-cpp-python's
module, and a session makes one engine however many loads it is asked for at once."""

from __future__ import annotations

import linecache
import sys
import threading
import time
from pathlib import Path

import pytest

from qwen_chat.engines.llama import Engine
from qwen_chat.engines.protocol import EngineEvent, Failed, Loaded, LoadProgress, LoadRequest
from qwen_chat.session.chat import ChatSession
from qwen_chat.store.database import Store
from qwen_chat.system.hardware import detect

from fake_engine import FakeEngine
from helpers import wait_until

ROUNDS = 8


class Seen:
    """One engine's events, each with the thread it arrived on, and every engine's progress in one list."""

    def __init__(self, name: str, progress_order: list[str], lock: threading.Lock) -> None:
        self.name, self.progress_order, self.lock = name, progress_order, lock
        self.events: list[tuple[int, EngineEvent]] = []
        self.finished = threading.Event()

    def __call__(self, event: EngineEvent) -> None:
        with self.lock:
            self.events.append((threading.get_ident(), event))
            if isinstance(event, LoadProgress):
                self.progress_order.append(self.name)
        if isinstance(event, Loaded | Failed):
            self.finished.set()


def test_two_engines_loading_at_once_both_load_one_after_the_other(tiny_models: dict[str, Path]) -> None:
    streams = sys.stdout, sys.stderr
    models = {"a": tiny_models["hybrid"], "b": tiny_models["thinking"]}
    for _ in range(ROUNDS):
        order: list[str] = []
        lock = threading.Lock()
        seen = {name: Seen(name, order, lock) for name in models}
        engines = {name: Engine(seen[name]).start() for name in models}
        try:
            for name, engine in engines.items():  # both engine threads take their load at once
                engine.load(LoadRequest(models[name], n_ctx=256))
            for name in models:
                assert seen[name].finished.wait(60), f"engine {name} never finished loading"
            for name, engine in engines.items():
                events = [event for _, event in seen[name].events]
                assert isinstance(events[-1], Loaded), events[-1]
                assert events[-1].model_path == models[name]
                progress = [e.fraction for e in events if isinstance(e, LoadProgress)]
                assert progress and progress[-1] == 1.0 and progress == sorted(progress)
                # each engine's callback ran on its own engine's thread, i.e. inside its own load
                assert engine._thread is not None
                assert {thread for thread, _ in seen[name].events} == {engine._thread.ident}
            # one load after the other: all of one engine's progress before any of the other's
            assert order == sorted(order) or order == sorted(order, reverse=True), order
            assert (sys.stdout, sys.stderr) == streams  # put back, not left pointing at the log
        finally:
            for engine in engines.values():
                engine.shutdown()
    assert (sys.stdout, sys.stderr) == streams


def test_a_load_waiting_for_another_can_be_cancelled(tiny_models: dict[str, Path]) -> None:
    from qwen_chat.engines.llama_setup import LOAD_LOCK

    seen = Seen("a", [], threading.Lock())
    engine = Engine(seen).start()
    try:
        with LOAD_LOCK:  # another load is running
            engine.load(LoadRequest(tiny_models["hybrid"], n_ctx=256))
            wait_until(lambda: _waiting_for_the_lock(engine), timeout=10, what="the engine to wait for the lock")
            engine.stop()
        assert seen.finished.wait(60)
        last = seen.events[-1][1]
        assert isinstance(last, Failed) and "cancelled" in last.message
    finally:
        engine.shutdown()


def _waiting_for_the_lock(engine: Engine) -> bool:
    """The engine's thread stands at `with LOAD_LOCK` in its _load (blocked in acquire, below Python)."""
    assert engine._thread is not None
    frame = sys._current_frames().get(engine._thread.ident or 0)
    return (frame is not None and frame.f_code.co_name == "_load"
            and "LOAD_LOCK" in linecache.getline(frame.f_code.co_filename, frame.f_lineno))


def test_a_session_asked_to_load_twice_at_once_makes_one_engine(tiny_models: dict[str, Path], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[FakeEngine] = []

    def slow_engine(on_event):  # noqa: ANN001, ANN202 (local_engine's signature)
        time.sleep(0.1)  # widens the window in which a second load could make its own
        engine = FakeEngine(on_event=on_event)
        made.append(engine)
        return engine

    monkeypatch.setattr("qwen_chat.session.model_side.local_engine", slow_engine)
    machine = detect()
    store = Store(tmp_path / "c.db")
    session = ChatSession(store)
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def load() -> None:
        start.wait()
        try:
            session.load_model(tiny_models["hybrid"], 256, machine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
        assert len(made) == 1 and session.model.engine is made[0]
        wait_until(lambda: session.model.ready, timeout=10, what="the session's model to load")
        assert len(made[0].requests) == 2  # both loads went to the one engine, in turn
    finally:
        session.close()
        store.close()
