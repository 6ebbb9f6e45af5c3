"""The composer (tui/composer.py) in the real app under Pilot: multi-line text in, exactly as typed or pasted."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import pytest
from textual import events

from qwen_chat.tui.composer import Composer
from qwen_chat.tui.messages import AssistantMessage

from fake_engine import FakeEngine, Reply
from helpers import SIZE, make_app, screen_text, status, wait_for

PASTED = "def f(x):\n    if x:\n\n        return 1\n    return 2\n\n# the end\n"


async def _ready(pilot, app) -> Composer:  # noqa: ANN001
    await wait_for(pilot, lambda: "ready" in status(app), what="model load")
    composer = app.query_one("#prompt", Composer)
    composer.focus()
    return composer


async def test_a_paste_keeps_every_line_and_is_sent_exactly(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    engine = FakeEngine.scripted([Reply("Looks fine.")])
    app = make_app(tmp_path / "c.db", tiny_models["none"], engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        composer = await _ready(pilot, app)
        await pilot.press(*"Review this:")
        await pilot.press("shift+enter")
        app.post_message(events.Paste(PASTED))  # as the driver delivers a bracketed paste
        await wait_for(pilot, lambda: composer.text == "Review this:\n" + PASTED, what="the paste in the box")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.chat.transcript.live is None and len(app.query(AssistantMessage)) == 1,
                       what="answer")
        (question, _) = app.session.store.messages(app.conversation.current.id)
        assert question.content == "Review this:\n" + PASTED  # indentation and blank lines included
        assert "<|im_start|>user\nReview this:\n" + PASTED in engine.requests[-1].prompt
        assert composer.text == ""


@pytest.mark.parametrize("key", ["shift+enter", "alt+enter", "ctrl+j"])
async def test_newline_keys_insert_a_line_and_enter_sends(key: str, tiny_models: dict[str, Path],
                                                          tmp_path: Path) -> None:
    app = make_app(tmp_path / "c.db", tiny_models["none"], engine=FakeEngine.scripted())
    async with app.run_test(size=SIZE) as pilot:
        composer = await _ready(pilot, app)
        await pilot.press("a", key, "b")
        assert composer.text == "a\nb"
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(app.session.store.messages(app.conversation.current.id)) == 2, what="sent")
        assert app.session.store.messages(app.conversation.current.id)[0].content == "a\nb"


async def test_the_box_grows_to_ten_lines_then_scrolls(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    app = make_app(tmp_path / "c.db", tiny_models["none"], engine=FakeEngine.scripted())
    async with app.run_test(size=SIZE) as pilot:
        composer = await _ready(pilot, app)
        one_line = composer.size.height
        composer.value = "1\n2\n3"
        await wait_for(pilot, lambda: composer.size.height == one_line + 2, what="three lines tall")
        composer.value = "\n".join(str(n) for n in range(40))
        await wait_for(pilot, lambda: composer.size.height >= one_line + 9, what="the box to grow")
        assert composer.size.height == one_line + 9  # ten lines of text, the rest scrolls
        assert composer.max_scroll_y > 0


async def test_up_and_down_walk_this_conversations_prompts(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    app = make_app(tmp_path / "c.db", tiny_models["none"], engine=FakeEngine.scripted())
    async with app.run_test(size=SIZE) as pilot:
        composer = await _ready(pilot, app)
        for text in ("first question", "second\nquestion"):
            composer.value = text
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.chat.transcript.live is None and not app.session.generating
                           and len(app.session.store.messages(app.conversation.current.id)) % 2 == 0, what="answer")
        await wait_for(pilot, lambda: composer.prompts == ["first question", "second\nquestion"],
                       what="the prompt history")
        await pilot.press(*"draft")
        await pilot.press("up")
        assert composer.text == "second\nquestion"
        await pilot.press("up")  # the cursor is on the last line of that prompt: up moves inside it first
        await pilot.press("up")
        assert composer.text == "first question"
        await pilot.press("down")
        assert composer.text == "second\nquestion"
        await pilot.press("down", "down")
        assert composer.text == "draft"  # back to what was being typed


async def test_a_draft_stays_with_its_conversation(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    app = make_app(tmp_path / "c.db", tiny_models["none"], engine=FakeEngine.scripted())
    async with app.run_test(size=SIZE) as pilot:
        composer = await _ready(pilot, app)
        first = app.conversation.current.id
        composer.value = "half-written\nthought"
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: app.conversation.current.id != first, what="new conversation")
        assert composer.text == ""
        app.open_conversation(first)
        await wait_for(pilot, lambda: composer.text == "half-written\nthought", what="the draft back")


async def test_ctrl_g_edits_the_draft_in_the_users_editor(tiny_models: dict[str, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nprintf "\\nwritten in the editor\\n" >> "$1"\n')
    editor.chmod(editor.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("VISUAL", str(editor))
    app = make_app(tmp_path / "c.db", tiny_models["none"], engine=FakeEngine.scripted())
    async with app.run_test(size=SIZE) as pilot:
        composer = await _ready(pilot, app)
        composer.value = "begun here"
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: composer.text == "begun here\nwritten in the editor", what="the edit")
        monkeypatch.setenv("VISUAL", os.fspath(tmp_path / "no-such-editor"))
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: any("Could not start the editor" in str(n.message) for n in app._notifications),
                       what="the editor's failure")
        assert composer.text == "begun here\nwritten in the editor"  # a missing editor loses nothing


async def test_slash_commands_still_work_and_an_empty_answer_says_so(tiny_models: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    app = make_app(tmp_path / "c.db", tiny_models["hybrid"], engine=FakeEngine.scripted([Reply("")]))
    async with app.run_test(size=SIZE) as pilot:
        composer = await _ready(pilot, app)
        composer.value = "/no_think"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "thinking off" in status(app), what="mode switch")
        composer.value = "hello"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.chat.transcript.live is None and len(app.query(AssistantMessage)) == 1,
                       what="answer")
        note = "the model ended its answer without any text"
        await wait_for(pilot, lambda: note in " ".join(screen_text(app).split()), what="the empty answer's note")


@pytest.mark.parametrize(("sequence", "key"), [("\x1b\r", "alt+enter"), ("\r", "enter"), ("\n", "ctrl+j"),
                                              ("\x1b[13;2u", "shift+enter"), ("\x1b[13;3u", "alt+enter")])
def test_the_terminal_keys_for_a_new_line_reach_the_composer(sequence: str, key: str) -> None:
    """What a terminal sends for Alt+Enter (ESC CR), Ctrl+J (LF) and, with the kitty protocol, Shift/Alt+Enter,
    as Textual's own parser reads it once the composer is imported."""
    from textual._xterm_parser import XTermParser

    import qwen_chat.tui.composer  # noqa: F401  (teaches the parser ESC CR)

    parser = XTermParser()
    keys = [getattr(event, "key", None) for event in parser.feed(sequence)]
    with contextlib.suppress(Exception):  # the end of input flushes what the parser held back
        keys += [getattr(event, "key", None) for event in parser.feed("")]
    assert keys == [key]
