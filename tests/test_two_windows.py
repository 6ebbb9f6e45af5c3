"""Two qwen-chat windows on one database (two real apps, one SQLite file): each owns its conversation."""

from __future__ import annotations

from pathlib import Path

from qwen_chat.store.presence import Presence
from qwen_chat.tui.composer import Composer
from qwen_chat.tui.conversation_list import ConversationItem

from fake_engine import FakeEngine, Reply
from helpers import make_app, status, wait_for

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
            assert second.conversation.id != first.conversation.id  # the latest is open in the first window

            composer = first.query_one("#prompt", Composer)
            composer.value = "list two fruits"
            await one.press("enter")
            await wait_for(one, lambda: len(first.store.messages(first.conversation.id)) == 2
                           and first._live is None, what="first answer")
            composer = second.query_one("#prompt", Composer)
            composer.focus()
            composer.value = "list two colors"
            await two.press("enter")
            await wait_for(two, lambda: len(second.store.messages(second.conversation.id)) == 2
                           and second._live is None, what="second answer")
            # each answer went to its own question, each conversation has one turn
            assert [m.content for m in first.store.messages(first.conversation.id)] == \
                ["list two fruits", "Fruits: apple, pear."]
            assert [m.content for m in second.store.messages(second.conversation.id)] == \
                ["list two colors", "Colors: red, blue."]

            # the first window's new title shows up in the second window's list without a restart
            await wait_for(two, lambda: any(i.title == "list two fruits"
                                            for i in second.query(ConversationItem)), what="other window's title")

            # the second window opens the first window's conversation: readable, but it does not send there
            second._open(second.store.conversation(first.conversation.id))
            composer.value = "a question from the wrong window"
            await two.press("enter")
            await two.pause(0.2)
            assert composer.value == "a question from the wrong window"  # kept, not sent
            assert len(second.store.messages(first.conversation.id)) == 2
            assert any("open in another qwen-chat window" in str(n.message) for n in second._notifications)
    # the first window is closed: its conversation is free again
    assert not Presence(db).open_elsewhere(first.conversation.id)


def test_presence_is_released_when_a_window_goes(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    one, two = Presence(db), Presence(db)
    assert one.claim(7) and not two.claim(7) and two.open_elsewhere(7)
    one.close()
    assert not two.open_elsewhere(7) and two.claim(7)
    assert one.open_elsewhere(7) and not one.claim(7)
