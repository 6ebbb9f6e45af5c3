"""The FakeEngine the UI tests use is faithful where the session can tell: the same events in the same order
as the real engine, through the real session and store."""

from __future__ import annotations

import queue
from pathlib import Path

from qwen_chat.engines.protocol import Loaded, Token
from qwen_chat.session.chat import ChatSession
from qwen_chat.session.events import AnswerSaved, AnswerStarted, Notice, UserSaved
from qwen_chat.session.sources import LocalModel
from qwen_chat.store.database import Store

from fake_engine import FakeEngine, Reply
from helpers import events_until, next_event


def _session(tmp_path: Path, model: Path, engine: FakeEngine) -> tuple[ChatSession, queue.Queue]:
    events: queue.Queue = queue.Queue()
    session = ChatSession(Store(tmp_path / "c.db"), events.put, engine=engine, source=LocalModel(model, 512))
    session.open()
    next_event(events, Loaded)
    return session, events


def test_a_reply_streams_as_tokens_then_is_saved(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    engine = FakeEngine.scripted([Reply("The answer.", thinking="Some thought.", chars=3)])
    session, events = _session(tmp_path, tiny_models["hybrid"], engine)
    conversation = session.new_conversation()
    session.send(conversation.id, "question")
    seen = events_until(events, lambda e: isinstance(e, AnswerSaved))
    kinds = [type(e) for e in seen if not isinstance(e, Token)]
    assert kinds == [UserSaved, AnswerStarted, AnswerSaved]  # in the order the real engine's events give
    tokens = [e for e in seen if isinstance(e, Token)]
    assert "".join(t.text for t in tokens) == "Some thought.The answer."
    assert tokens[-1].stream is tokens[0].stream  # one shared text, as the real engine shares its own
    saved = seen[-1].message
    assert (saved.status, saved.thinking, saved.content) == ("complete", "Some thought.", "The answer.")
    assert "<|im_start|>user\nquestion" in engine.requests[-1].prompt  # the real template rendered the turn
    session.close()


def test_stop_and_failure_end_an_answer_as_the_real_engine_does(tiny_models: dict[str, Path],
                                                                tmp_path: Path) -> None:
    engine = FakeEngine.scripted([Reply("never ending", wait_for_stop=True), Reply("half", fail="out of memory")])
    session, events = _session(tmp_path, tiny_models["none"], engine)
    conversation = session.new_conversation()
    session.send(conversation.id, "one")
    next_event(events, Token)
    session.stop()
    stopped = next_event(events, AnswerSaved).message
    assert (stopped.status, stopped.content) == ("stopped", "never ending")
    session.send(conversation.id, "two")
    seen = events_until(events, lambda e: isinstance(e, Notice) and e.error)
    failed = next(e for e in seen if isinstance(e, AnswerSaved)).message
    assert failed.status == "failed" and failed.content == "half" and "out of memory" in seen[-1].text
    session.close()


def test_a_load_failure_is_reported_like_a_real_one(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from qwen_chat.engines.protocol import Failed

    events: queue.Queue = queue.Queue()
    engine = FakeEngine.scripted(load_failure="not enough memory")
    session = ChatSession(Store(tmp_path / "c.db"), events.put, engine=engine,
                          source=LocalModel(tiny_models["none"], 512))
    session.open()
    failed = next_event(events, Failed)
    assert failed.request_id is None and failed.message == "not enough memory" and not session.model.ready
    session.close()
