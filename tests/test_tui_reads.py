"""One Enter reads the conversation's history from SQLite as little as it can (issue 20): the UI keeps it in the
open conversation (session/conversation.py), read when the conversation opens and kept current by the
session's events, so between Enter and the end of the answer the UI thread reads none of it."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from fake_engine import FakeEngine, Reply
from helpers import SIZE, make_app, status, type_and_send, wait_for

MESSAGES_OF_A_CONVERSATION = re.compile(r"\bFROM messages\b.*\bconversation_id\b", re.S | re.I)


@pytest.mark.parametrize("model", ["none", "hybrid"])
async def test_one_enter_reads_the_history_once_and_the_ui_not_at_all(tiny_models: dict[str, Path],
                                                                        tmp_path: Path, model: str) -> None:
    # "hybrid" starts with thinking on, so the answer's mode depends on the last soft switch in the history
    app = make_app(tmp_path / "chat.db", tiny_models[model], engine=FakeEngine.scripted([Reply("fine, thanks")]))
    reads: list[str] = []  # the thread of each read of the conversation's messages
    counting = threading.Event()

    def traced(sql: str) -> None:
        if counting.is_set() and MESSAGES_OF_A_CONVERSATION.search(sql):
            reads.append(threading.current_thread().name)

    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="model load")
        app.session.store.connection.db.conn.set_trace_callback(traced)
        counting.set()
        await type_and_send(pilot, "How are you?")
        await wait_for(pilot, lambda: "fine, thanks" in "".join(
            m.answer_text for m in app.query("AssistantMessage")) and app.chat.transcript.live is None
                       and not app.session.generating, what="the answer")
        counting.clear()
        app.session.store.connection.db.conn.set_trace_callback(None)
    ui = [name for name in reads if name == threading.main_thread().name]
    assert ui == [], f"the UI thread read the conversation's messages {len(ui)} time(s)"
    # the one read is the session's, on the thread the turn starts on: the newest turns that can fit, with what
    # the trim marker counts (session/prepare.py, store/recent.py). Saving the question reads no history (the
    # title rule looks at the conversation's row), and the thinking rule's soft switch comes from the window's
    # OpenConversation, which keeps the history it read when the conversation opened.
    assert len(reads) == 1, reads
