"""Two qwen-chat windows on one database (two real apps, one SQLite file): each owns its conversation."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from qwen_chat.store.presence import Presence
from qwen_chat.tui import app as app_module
from qwen_chat.tui.composer import Composer
from qwen_chat.tui.conversation_list import ELSEWHERE_MARK, ConversationItem

from fake_engine import FakeEngine, Reply
from helpers import make_app, screen_text, status, type_and_send, wait_for

SIZE = (110, 30)


async def test_a_second_window_starts_its_own_conversation_and_never_answers_anothers(
        tiny_models: dict[str, Path], tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    first = make_app(db, tiny_models["none"], engine=FakeEngine.scripted([Reply("Fruits: apple, pear.")]))
    second = make_app(db, tiny_models["none"], engine=FakeEngine.scripted([Reply("Colors: red, blue.")]))
    async with first.run_test(size=SIZE) as one:
        await wait_for(one, lambda: "ready" in status(first), what="first window")
        async with second.run_test(size=SIZE) as two:
            await wait_for(two, lambda: "ready" in status(second), what="second window")
            # the latest is open in the first window
            assert second.conversation.current.id != first.conversation.current.id

            composer = first.query_one("#prompt", Composer)
            composer.value = "list two fruits"
            await one.press("enter")
            await wait_for(one, lambda: len(first.session.store.messages(first.conversation.current.id)) == 2
                           and first.chat.transcript.live is None, what="first answer")
            composer = second.query_one("#prompt", Composer)
            composer.focus()
            composer.value = "list two colors"
            await two.press("enter")
            await wait_for(two, lambda: len(second.session.store.messages(second.conversation.current.id)) == 2
                           and second.chat.transcript.live is None, what="second answer")
            # each answer went to its own question, each conversation has one turn
            assert [m.content for m in first.session.store.messages(first.conversation.current.id)] == \
                ["list two fruits", "Fruits: apple, pear."]
            assert [m.content for m in second.session.store.messages(second.conversation.current.id)] == \
                ["list two colors", "Colors: red, blue."]

            # the first window's new title shows up in the second window's list without a restart
            await wait_for(two, lambda: any(i.title == "list two fruits"
                                            for i in second.query(ConversationItem)), what="other window's title")

            # the second window opens the first window's conversation: readable, but it does not send there
            second.open_conversation(first.conversation.current.id)
            composer.value = "a question from the wrong window"
            await two.press("enter")
            await wait_for(two, lambda: any("open in another qwen-chat window" in str(n.message)
                                            for n in second._notifications), what="the refusal")
            assert composer.value == "a question from the wrong window"  # kept, not sent
            assert len(second.session.store.messages(first.conversation.current.id)) == 2
    # the first window is closed: its conversation is free again
    assert not Presence(db).open_elsewhere(first.conversation.current.id)


async def test_an_idle_window_sees_what_another_changed_before_its_first_look(
        tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a slower look than usual: the other window's whole turn lands before the idle window's first look (the case
    # that used to be lost: that look only took note of the database's version)
    monkeypatch.setattr(app_module, "OTHER_WINDOWS_EVERY", 3.0)
    db = tmp_path / "chat.db"
    first = make_app(db, tiny_models["none"], engine=FakeEngine.scripted([Reply("Fruits: apple, pear.")]))
    second = make_app(db, tiny_models["none"], engine=FakeEngine.scripted([]))
    async with first.run_test(size=SIZE) as one:
        await wait_for(one, lambda: "ready" in status(first), what="first window")
        async with second.run_test(size=SIZE) as two:
            idle_since = time.monotonic()
            own = second.conversation.current.id  # a new one: the latest is open in the first window
            answered = first.conversation.current.id
            await type_and_send(one, "list two fruits")
            await wait_for(one, lambda: len(first.session.store.messages(answered)) == 2
                           and first.chat.transcript.live is None,
                           what="first answer")
            await one.press("ctrl+n")
            await wait_for(one, lambda: first.conversation.current.id not in (answered, own), what="a new conversation")
            opened = first.conversation.current.id
            assert time.monotonic() - idle_since < 3.0, "too slow to come before the idle window's first look"

            def items() -> dict[int, ConversationItem]:
                return {item.conversation_id: item for item in second.query(ConversationItem)}

            # the second window does nothing: its list follows the first window's title, new conversation and mark
            await wait_for(two, lambda: opened in items() and items()[answered].title == "list two fruits",
                           timeout=15, what="the other window's changes in the idle window's list")
            shown = items()
            assert shown[opened].elsewhere and not shown[answered].elsewhere and not shown[own].elsewhere
            assert second.conversation.current.id == own
            await wait_for(two, lambda: "list two fruits" in screen_text(second), what="the new title drawn")
            lines = screen_text(second).splitlines()
            assert any(ELSEWHERE_MARK + "New chat" in line for line in lines)
            assert any("list two fruits" in line and ELSEWHERE_MARK not in line for line in lines)

            # the first window goes back to its answered conversation (nothing is written): the mark follows
            version = second.session.store.data_version()
            first.open_conversation(answered)
            await wait_for(two, lambda: items()[answered].elsewhere and not items()[opened].elsewhere,
                           timeout=15, what="the mark to follow the other window's switch")
            # moved by the locks alone: the first window wrote nothing
            assert second.session.store.data_version() == version


def test_presence_is_released_when_a_window_goes(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    one, two = Presence(db), Presence(db)
    assert one.claim(7) and not two.claim(7) and two.open_elsewhere(7)
    one.close()
    assert not two.open_elsewhere(7) and two.claim(7)
    assert one.open_elsewhere(7) and not one.claim(7)


def test_looking_at_the_marks_creates_no_lock_files(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    one, two = Presence(db), Presence(db)
    assert one.claim(3)
    assert two.held_elsewhere(range(1, 500)) == {3}  # only the file that exists was tried
    assert sorted(p.name for p in two.folder.iterdir()) == ["3"]
    assert one.held_elsewhere([3]) == set()  # its own is not "elsewhere"


async def test_the_look_at_other_windows_is_harmless_while_the_app_closes(tiny_models: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    """Its timer can fire once more after the widgets are gone (a suite run saw NoMatches on '#conversations')."""
    app = make_app(tmp_path / "c.db", tiny_models["none"], engine=FakeEngine.scripted())
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="model load")
        await app.query_one("#conversations").remove()
        app._watch_other_windows()  # the timer's callback, as it runs when it fires during shutdown
        assert not app.query("#conversations")
