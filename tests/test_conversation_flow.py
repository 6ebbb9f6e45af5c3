"""Regenerate, edit and resend, /budget and context trimming through the real session, engine and store."""

from __future__ import annotations

import queue
from pathlib import Path
from typing import TypeVar

import pytest

from qwen_chat.engines.protocol import Done, Loaded
from qwen_chat.qwen3.thinking import STOP_THINKING
from qwen_chat.session.chat import ChatSession
from qwen_chat.session.events import AnswerSaved, ContextTrimmed, Notice, Rewound
from qwen_chat.store.database import Store
from qwen_chat.system.hardware import Machine

from helpers import next_event

GiB = 1 << 30
CPU = Machine(32 * GiB, 30 * GiB, 2, 2, (), False)
T = TypeVar("T")


class Session:
    """A ChatSession on a real engine and a real SQLite file, with a way to wait for its events."""

    def __init__(self, db: Path, model: Path, n_ctx: int) -> None:
        self.events: queue.Queue[object] = queue.Queue()
        self.seen: list[object] = []
        self.store = Store(db)
        self.session = ChatSession(self.store, self.events.put)
        self.session.load_model(model, n_ctx, machine=CPU)
        loaded = self.wait(Loaded)
        # the model and context asked for, all of it on the CPU machine the plan was made for
        assert (loaded.model_path, loaded.n_ctx, loaded.n_gpu_layers) == (model, n_ctx, 0), loaded

    def wait(self, kind: type[T], timeout: float = 120) -> T:
        """The next `kind` event; a Failed before it fails the test. Every event taken is kept in `seen`."""
        return next_event(self.events, kind, timeout, seen=self.seen)

    def ask(self, conversation_id: int, text: str) -> AnswerSaved:
        """Send `text` and wait for the answer to be saved: it answers that question and did not fail."""
        self.session.send(conversation_id, text)
        saved = self.wait(AnswerSaved)
        answer = saved.message
        question, last = self.store.messages(conversation_id)[-2:]
        assert (question.role, question.content, last.id) == ("user", text, answer.id), (question, last)
        assert answer.status != "failed" and saved.done is not None, answer.error
        return saved

    def close(self) -> None:
        self.session.close()
        self.store.close()


@pytest.fixture
def chat(real_model: Path, tmp_path: Path):
    s = Session(tmp_path / "chat.db", real_model, 2048)
    yield s
    s.close()


def test_regenerate_keeps_the_old_answer_as_an_earlier_version(chat: Session) -> None:
    cid = chat.session.new_conversation().id
    first = chat.ask(cid, "Name one colour. One word.").message
    chat.session.regenerate(cid)
    rewound = chat.wait(Rewound)
    assert rewound.from_message_id == first.id
    second = chat.wait(AnswerSaved).message
    assert second.id != first.id and second.status == "complete" and second.content
    shown = chat.store.messages(cid)
    assert [m.id for m in shown] == [shown[0].id, second.id]  # the question, then only the new answer
    assert [[m.id for m in run] for run in chat.store.earlier_versions(second.id)] == [[first.id]]


def test_edit_and_resend_replaces_later_turns_and_keeps_them(chat: Session) -> None:
    cid = chat.session.new_conversation().id
    chat.ask(cid, "Say the word apple.")
    chat.ask(cid, "Now say the word pear.")
    old = chat.store.messages(cid)
    assert len(old) == 4
    chat.session.edit_and_resend(old[0].id, "Say the word plum.")
    answer = chat.wait(AnswerSaved).message
    now = chat.store.messages(cid)
    assert [m.role for m in now] == ["user", "assistant"] and now[0].content == "Say the word plum."
    assert now[1].id == answer.id
    assert [[m.id for m in run] for run in chat.store.earlier_versions(now[0].id)] == [[m.id for m in old]]
    assert chat.store.versions_by_message(cid) == {now[0].id: 2}


def test_budget_command_is_refused_on_a_model_that_does_not_think(chat: Session) -> None:
    cid = chat.session.new_conversation().id
    assert chat.session.send(cid, "/budget 256") is None
    notice = chat.wait(Notice)
    assert notice.error and "does not think" in notice.text
    assert chat.store.conversation(cid).thinking_budget is None


def test_budget_command_and_a_cut_answer_on_a_thinking_model(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """The tiny Qwen3 thinking model (random weights) thinks forever: the budget is what ends it."""
    chat = Session(tmp_path / "t.db", tiny_models["thinking"], 512)
    try:
        cid = chat.session.new_conversation().id
        for bad in ("/budget lots", "/budget -5", "/budget 999999999"):
            chat.session.send(cid, bad)
            notice = chat.wait(Notice)
            assert notice.error and "1 to 262,144" in notice.text
        chat.session.send(cid, "/budget 4")
        notice = chat.wait(Notice)
        assert not notice.error and "4 tokens" in notice.text
        assert chat.store.conversation(cid).thinking_budget == 4
        # random weights may sample the end of thinking before 4 tokens; seed 2 makes the model think past
        # them, so the budget cuts its thinking
        chat.session.seed = 2
        answer = chat.ask(cid, "hi").message
        assert answer.thinking_budget == 4 and answer.sampling["seed"] == 2
        assert answer.thinking_cut_at is not None
        assert answer.thinking[answer.thinking_cut_at:].strip() == STOP_THINKING.replace("</think>", "").strip()
        assert answer.thinking_closed
        chat.session.send(cid, "/budget off")
        chat.wait(Notice)
        assert chat.store.conversation(cid).thinking_budget == 0
    finally:
        chat.close()


def test_a_long_conversation_drops_oldest_turns_and_keeps_the_start(real_model: Path, tmp_path: Path) -> None:
    chat = Session(tmp_path / "long.db", real_model, 1024)
    try:
        cid = chat.session.new_conversation().id
        chat.store.set_system_prompt(cid, "You are terse. Answer in one word.")
        filler = "lorem ipsum dolor sit amet " * 30
        trimmed: ContextTrimmed | None = None
        for i in range(8):
            chat.ask(cid, f"Note {i}: {filler} Reply with OK.")
            trimmed = trimmed or next((e for e in chat.seen if isinstance(e, ContextTrimmed)), None)
            if trimmed:
                break
        assert trimmed is not None, "a 1,024-token context must overflow within 8 long turns"
        answer = chat.store.message(trimmed.answer_id)
        assert answer.context_from_id == trimmed.from_message_id and trimmed.dropped_turns >= 1
        first_kept = chat.store.message(trimmed.from_message_id)
        assert first_kept.role == "user" and first_kept.id > chat.store.messages(cid)[0].id
        # the next turn starts from the same message: the KV cache prefix (system + kept turns) is reused
        chat.seen.clear()
        after = chat.ask(cid, "Reply with OK.")
        done = after.done
        assert isinstance(done, Done) and not any(isinstance(e, ContextTrimmed) for e in chat.seen)
        assert after.message.context_from_id == trimmed.from_message_id
        assert done.prompt_evaluated < done.prompt_tokens / 2, (done.prompt_evaluated, done.prompt_tokens)
        assert len(chat.store.messages(cid)) >= 2 * (trimmed.dropped_turns + 2)  # nothing left the store
    finally:
        chat.close()
