"""The same Pilot chat test on the local llama.cpp engine and on an OpenAI-compatible server
(llama-cpp-python's real server serving the same model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen_chat.store.database import Store
from qwen_chat.tui.app import QwenChatApp
from qwen_chat.tui.messages import AssistantMessage, UserMessage

from helpers import SIZE, make_app, screen_text, status, type_and_send, wait_for, write_settings


@pytest.fixture(params=["local", "http"])
def build_app(request: pytest.FixtureRequest, real_model: Path):
    """Builds the app on the real model: loaded by the app itself, or served by llama_server."""
    def build(db: Path) -> QwenChatApp:
        if request.param == "local":
            return make_app(db, real_model, n_ctx=2048)
        return make_app(db, endpoint=(request.getfixturevalue("llama_server"), None, None))

    build.kind = request.param  # type: ignore[attr-defined]
    return build


async def test_send_stream_stop_and_find_it_again(build_app, tmp_path: Path) -> None:
    # settings.toml's seed, sent to the server too: the same answers every run, and the numbers written in
    # words go on for thousands of tokens (without a seed an answer was now and then short enough to end on its
    # own before Esc reached it)
    write_settings("[chat]\nseed = 0\n")
    db = tmp_path / "chat.db"
    app = build_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="engine ready")
        await type_and_send(pilot, "Reply with just the word: hello")
        await wait_for(pilot, lambda: len(app.query(UserMessage)) == 1, what="user message")
        await wait_for(pilot, lambda: app.chat.transcript.live is None and len(app.query(AssistantMessage)) == 1,
                       what="answer")
        assert "hello" in app.query_one(AssistantMessage).answer_text.lower()
        assert "thinking on" in status(app) or "no thinking" in status(app)  # a served model counts as hybrid
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: not app.query(AssistantMessage), what="new conversation")
        await type_and_send(pilot, "Write the numbers from 1 to 1000 in words, one per line, nothing else.")
        await wait_for(pilot, lambda: len(app.query(AssistantMessage)) == 1 and (
            len(app.query(AssistantMessage)[-1].answer_text) > 30 or app.chat.transcript.live is None),
                what="streaming")
        assert app.chat.transcript.live is not None, app.query(AssistantMessage)[-1].answer_text  # still streaming
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.chat.transcript.live is None, timeout=5, what="stop")
        await wait_for(pilot, lambda: not app.session.generating, what="idle")
        assert "tok/s" in status(app)
    store = Store(db)
    conversation = store.latest_conversation()
    assert conversation is not None
    messages = store.messages(conversation.id)
    summary = [(m.status, m.content[:30]) for m in messages]
    assert messages[-1].status == "stopped" and messages[-1].content.strip(), summary
    store.close()
    again = build_app(db)
    async with again.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(again.query(AssistantMessage)) == len(messages) // 2, what="history")
        await wait_for(pilot, lambda: "stopped" in screen_text(again), what="the stopped answer's mark")
