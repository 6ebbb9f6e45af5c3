"""The app's conversation features driven with Pilot: regenerate, edit and resend, copy, persona, context
reload, the thinking budget and the context-full marker. The scripted FakeEngine on a tiny model file (read
and planned for as a real one), real SQLite."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import OptionList

from qwen_chat.engines.protocol import LoadRequest
from qwen_chat.store.database import Store
from qwen_chat.tui.app import QwenChatApp
from qwen_chat.tui.composer import Composer
from qwen_chat.tui.conversation_screens import ContextScreen, PersonasScreen
from qwen_chat.tui.messages import AssistantMessage, TrimMarker, UserMessage

from fake_engine import FakeEngine, Reply
from helpers import SIZE, make_app, screen_text, status, type_and_send, wait_for


async def ask(pilot, app: QwenChatApp, text: str) -> None:
    before = len(app.session.store.messages(app.conversation.current.id))
    await type_and_send(pilot, text)
    await wait_for(pilot, lambda: len(app.session.store.messages(app.conversation.current.id)) >= before + 2
                   and not app.session.generating and app.chat.transcript.live is None, what=f"answer to {text!r}")


HELLO = "Here:\n\n```python\nprint('hello')\n```\n"
HELLO_AGAIN = "Again:\n\n```python\nprint('hello, world')\n```\n"


async def test_regenerate_edit_and_copy(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    engine = FakeEngine.scripted([Reply(HELLO), Reply(HELLO_AGAIN), Reply("banana")])
    app = make_app(tmp_path / "chat.db", tiny_models["none"], n_ctx=2048, engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="model load")
        await ask(pilot, app, "Write a one-line Python hello world in a code block.")
        first = app.session.store.messages(app.conversation.current.id)[-1]
        assert first.content == HELLO

        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.session.store.messages(app.conversation.current.id)[-1].id != first.id
                       and not app.session.generating and app.chat.transcript.live is None, what="regenerated answer")
        answers = app.query(AssistantMessage)
        assert len(answers) == 1 and answers[0].message_id != first.id  # the old answer left the transcript
        assert answers[0].answer_text == HELLO_AGAIN
        await wait_for(pilot, lambda: "version 2 of 2" in screen_text(app), what="the answer's version line")
        assert [r[0].id for r in app.session.store.earlier_versions(answers[0].message_id)] == [first.id]
        # the regeneration was asked the same question, without the old answer
        assert engine.requests[-1].messages[-1]["content"].startswith("Write a one-line Python hello world")
        assert HELLO not in engine.requests[-1].prompt

        # copy: the answer has a code block, so Ctrl+Y offers a choice; the code block is copied exactly
        await pilot.press("ctrl+y")
        await wait_for(pilot, lambda: isinstance(app.screen.focused, OptionList), what="copy choices")
        assert app.screen.query_one(OptionList).option_count == 2  # the whole answer, the code block
        await pilot.press("down", "enter")
        assert app.clipboard == "print('hello, world')"

        # edit the question: Ctrl+E puts it in the prompt; Enter resends; the old turn becomes version 1
        await pilot.press("ctrl+e")
        box = app.query_one("#prompt", Composer)
        assert box.value.startswith("Write a one-line Python") and box.has_class("editing")
        box.value = "Say just the word banana."
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.session.generating and app.chat.transcript.live is None
                       and app.session.store.messages(app.conversation.current.id)[0].content
                       == "Say just the word banana.",
                       what="edited turn answered")
        await wait_for(pilot, lambda: [a.answer_text for a in app.query(AssistantMessage)] == ["banana"],
                       what="the transcript drawn again")
        users = app.query(UserMessage)
        assert [u.text for u in users] == ["Say just the word banana."] and users[0].versions == 2
        assert [a.answer_text for a in app.query(AssistantMessage)] == ["banana"]
        versions = app.session.store.earlier_versions(users[0].message_id)
        assert versions[0][0].content.startswith("Write a one-line Python")

        # Esc while editing cancels the edit and keeps the conversation as it is
        await pilot.press("ctrl+e")
        await pilot.press("escape")
        assert not box.value and not box.has_class("editing")


async def test_persona_and_context_reload_keep_the_conversation(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    store = Store(db)
    store.save_persona("Pirate", "You are a pirate. Answer like one.")
    store.close()
    engine = FakeEngine.scripted([Reply("Hello."), Reply("Arr, farewell.")])
    app = make_app(db, tiny_models["hybrid"], n_ctx=1024, engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="model load")
        await ask(pilot, app, "Say hello.")
        await pilot.press("f6")
        await wait_for(pilot, lambda: isinstance(app.screen, PersonasScreen), what="personas")
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: app.conversation.current.system_prompt.startswith("You are a pirate"),
                       what="persona")

        await pilot.press("f7")
        await wait_for(pilot, lambda: isinstance(app.screen, ContextScreen), what="context screen")
        keys = [app.screen.query_one(OptionList).get_option_at_index(i).id
                for i in range(app.screen.query_one(OptionList).option_count)]
        await pilot.press(*["down"] * keys.index("native"), "enter")
        await wait_for(pilot, lambda: app.session.model.n_ctx == 40960 and "ready" in status(app),
                       what="reload with the native context")  # the tiny model's native length
        await wait_for(pilot, lambda: len(app.query(UserMessage)) == 1 and len(app.query(AssistantMessage)) == 1,
                       what="the chat stayed (once: a redraw's removed widgets are pruned a moment later)")
        assert "ctx " in status(app) and "/40,960" in status(app)
        await ask(pilot, app, "Say goodbye.")
        assert len(app.session.store.messages(app.conversation.current.id)) == 4
    loads = [r.n_ctx for r in engine.requests if isinstance(r, LoadRequest)]
    assert loads == [1024, 40960]  # one reload, planned for the preset chosen
    prompt = engine.requests[-1].prompt
    assert "You are a pirate" in prompt and "Say hello." in prompt  # the persona and the earlier turn were sent


async def test_budget_meter_and_cut_marker_on_a_thinking_model(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    engine = FakeEngine.scripted([Reply("Done.", thinking="Let me think about this for a good while longer.")])
    app = make_app(tmp_path / "chat.db", tiny_models["thinking"], n_ctx=512, engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="model load")
        await type_and_send(pilot, "/budget 4")
        await wait_for(pilot, lambda: app.session.store.conversation(app.conversation.current.id).thinking_budget == 4,
                       what="budget set")
        await ask(pilot, app, "hi")
        assert engine.requests[-1].thinking_budget == 4  # the budget reached the engine
        answer = app.session.store.messages(app.conversation.current.id)[-1]
        assert answer.thinking.startswith("Let me think a") and answer.content == "Done."
        assert answer.thinking[answer.thinking_cut_at:].lstrip().startswith("Considering the limited time")
        assert "thought 4/4" in status(app)  # the meter's last reading: the budget, used up
        box = app.query(AssistantMessage)[-1].query_one(".thinking")
        await wait_for(pilot, lambda: "budget" in str(box.title), what="the cut marked in the thinking's title")
        assert "4-token budget" in str(box.title)


async def test_context_full_marker_shows_and_survives_a_restart(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    # the third answer finds the context full: the engine leaves the oldest turn out, as llama.cpp's does
    engine = FakeEngine.scripted([Reply("OK."), Reply("OK."), Reply("OK.", trim=1)])
    app = make_app(db, tiny_models["none"], n_ctx=1024, engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="model load")
        for i in range(3):
            await ask(pilot, app, f"Note {i}. Reply with OK.")
        await wait_for(pilot, lambda: app.query(TrimMarker), what="the context-full marker")
        marker = app.query_one(TrimMarker)
        transcript = list(app.query_one("#transcript").children)
        after = transcript[transcript.index(marker) + 1]
        assert isinstance(after, UserMessage) and after.message_id > transcript[0].message_id
        # the second turn starts it
        assert after.message_id == app.session.store.messages(app.conversation.current.id)[2].id
        count = len(app.session.store.messages(app.conversation.current.id))
    app2 = make_app(db, tiny_models["none"], n_ctx=1024, engine=FakeEngine.scripted())
    async with app2.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(app2.query(UserMessage)) == count // 2, what="history")
        assert len(app2.query(TrimMarker)) == 1  # the marker is drawn from the store, nothing was lost
