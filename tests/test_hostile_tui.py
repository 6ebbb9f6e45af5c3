"""Hostile files met by the TUI (issue 13): broken user themes, a broken user catalog, escape sequences in titles
and file names, and a start that must leave settings.toml alone. The real app under Pilot, on real files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from textual.widgets import Input, Label

from qwen_chat.catalog.entries import CatalogError
from qwen_chat.catalog.loader import load_models
from qwen_chat.config.settings import save_theme, settings_path
from qwen_chat.store.database import Store
from qwen_chat.system.paths import config_dir
from qwen_chat.tui.app import QwenChatApp
from qwen_chat.tui.attachment_bar import AttachmentBar
from qwen_chat.tui.composer import Composer
from qwen_chat.tui.search_screen import HitItem

from fake_engine import FakeEngine, Reply
from helpers import SIZE, make_app, screen_text, status, wait_for

# ESC ] 0 ; ... BEL sets the terminal window's title; ESC [ 2 J clears the screen
HOSTILE_TITLE = "\x1b]0;pwned\x07evil\x1b[2J"
CONTROLS = ("\x1b", "\x07", "\x9b")  # ESC, BEL and the one-byte CSI
ESC_SHOWN = "\u241b"  # what printable() draws instead of ESC


def _app(db: Path | Store, model: Path, replies: int = 0) -> QwenChatApp:
    return make_app(db, model, engine=FakeEngine.scripted([Reply("Fine.")] * replies))


def _notes(app: QwenChatApp) -> list[str]:
    return [str(n.message) for n in app._notifications]


def _toasts(app: QwenChatApp) -> str:
    """The screen as one line, without the toasts' and the sidebar's edges: a wrapped message reads whole."""
    return " ".join(line.strip("\u2595\u258c ") for line in screen_text(app).splitlines() if line.strip())


def _no_controls(text: str, where: str) -> None:
    found = [c for c in CONTROLS if c in text]
    assert not found, f"{where} would send {found!r} to the terminal:\n{text}"


# -- user themes ---------------------------------------------------------------------------------------------------

BAD_THEMES = {  # file: (contents, the key its warning must name)
    "bad-colour.toml": ('name = "bad-colour"\nprimary = "not-a-color"\n', "primary"),
    "bad-dark.toml": ('name = "bad-dark"\nprimary = "#112233"\ndark = "yes"\n', "dark"),
    "bad-background.toml": ('name = "bad-background"\nprimary = "#112233"\nbackground = 12\n', "background"),
    "bad-name.toml": ('name = 7\nprimary = "red"\n', "name"),
    "no-primary.toml": ('name = "no-primary"\nsecondary = "red"\n', "primary"),
}


async def test_broken_user_themes_are_reported_and_skipped(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    themes = config_dir() / "themes"
    themes.mkdir(parents=True)
    for file, (text, _) in BAD_THEMES.items():
        (themes / file).write_text(text)
    (themes / "mine.toml").write_text('name = "mine"\nprimary = "ansi_red"\nbackground = "rgb(10, 20, 30)"\n'
                                      'dark = true\n')
    save_theme("bad-colour")  # the broken one is the saved one: applying it is what used to crash every start
    app = _app(tmp_path / "chat.db", tiny_models["hybrid"])
    async with app.run_test(size=SIZE, notifications=True) as pilot:  # toasts drawn, as in a terminal
        await wait_for(pilot, lambda: "ready" in status(app), what="the app to start and load the model")
        for file, (_, key) in BAD_THEMES.items():
            name = file.removesuffix(".toml")
            assert name not in app.available_themes
            note = next((n for n in _notes(app) if f"{themes / file} was skipped" in n), None)
            assert note is not None, f"no warning about {file}: {_notes(app)}"
            assert f"{key}:" in note, note
        assert "not-a-color" in next(n for n in _notes(app) if "bad-colour.toml" in n)  # the value, as written
        await wait_for(pilot, lambda: "bad-colour.toml was skipped: primary:" in _toasts(app), timeout=10,
                       what="the warning on screen")
        assert app.theme == "qwen-dark"
        assert "The saved theme 'bad-colour' is not available; using qwen-dark." in _notes(app)
        # Textual announces the fallback a tick later (the app then drops the theme it started with): the
        # announcement must not replace the setting
        await wait_for(pilot, lambda: app._theme_at_start is None, what="Textual's announcement of the theme")
        assert 'theme = "bad-colour"' in settings_path().read_text(encoding="utf-8")  # fixed file: chosen again
        for good in ("mine", "qwen-light", "qwen-dark"):  # the others still work
            app.theme = good
            await pilot.pause()  # one refresh: the theme's colours are applied (a bad one would fail here)
            assert app.theme == good and app.current_theme.name == good


# -- a broken user catalog -----------------------------------------------------------------------------------------

BAD_CATALOGS = {
    "yaml": "schema: 1\nmodels:\n  broken: [1, 2\n",
    "schema": "schema: 1\nmodels:\n  tiny:\n    name: Tiny\n",
}


@pytest.mark.parametrize("kind", sorted(BAD_CATALOGS))
async def test_models_screen_says_what_is_wrong_with_the_user_catalog(kind: str, tiny_models: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    config_dir().mkdir(parents=True, exist_ok=True)
    (config_dir() / "models_catalog.yaml").write_text(BAD_CATALOGS[kind])
    with pytest.raises(CatalogError) as raised:
        load_models()
    expected = str(raised.value)  # what `qwen-chat models` prints after "qwen-chat: "
    assert "models_catalog.yaml line" in expected
    app = _app(tmp_path / "chat.db", tiny_models["hybrid"])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="load")
        await pilot.press("f3")
        await wait_for(pilot, lambda: bool(app.screen.query("#machine")), what="the models screen")
        machine = app.screen.query_one("#machine", Label)
        await wait_for(pilot, lambda: "Checking" not in str(machine.render()), timeout=15,
                       what="the models screen to stop checking")
        assert expected in str(machine.render())
        assert "models_catalog.yaml" in screen_text(app)
        await pilot.press("escape")  # and the screen still closes
        await wait_for(pilot, lambda: not app.screen.query("#machine"), what="the models screen to close")


# -- escape sequences in titles, snippets and file names ------------------------------------------------------------


async def test_escape_sequences_never_reach_the_terminal(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    model = tmp_path / f"{HOSTILE_TITLE}.gguf"
    shutil.copyfile(tiny_models["hybrid"], model)
    store = Store(tmp_path / "chat.db")
    conversation = store.create_conversation(title=HOSTILE_TITLE)
    store.add_user_message(conversation.id, f"lighthouse {HOSTILE_TITLE} lamp")
    answer = store.start_answer(conversation.id, "m", "", {})
    store.finish_answer(answer.id, "complete", "", f"The lighthouse {HOSTILE_TITLE} shines.", True)
    store.close()
    app = _app(tmp_path / "chat.db", model)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="load")
        shown = screen_text(app)
        _no_controls(shown, "the conversation list")
        _no_controls(status(app), "the status bar")
        assert ESC_SHOWN + "]0;pwned" in status(app)  # the model's file name, control characters made visible
        list_text = str(app.query_one("#conversations").children[0].query_one(Label).render())
        assert list_text.startswith(ESC_SHOWN + "]0;pwned\u2407evil"), list_text

        await pilot.press("ctrl+f")
        await wait_for(pilot, lambda: bool(app.screen.query("#search-input")), what="search screen")
        await pilot.press(*"lighthouse")
        await wait_for(pilot, lambda: len(app.screen.query(HitItem)) == 2, what="the hits")
        hits = screen_text(app)
        _no_controls(hits, "the search results")
        assert ESC_SHOWN + "]0;pwned" in hits
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.screen.query("#search-input"), what="search closed")

        await pilot.press("f2")
        await wait_for(pilot, lambda: bool(app.screen.query("#new-title")), what="rename dialog")
        _no_controls(app.screen.query_one("#new-title", Input).value, "the rename dialog")
        _no_controls(screen_text(app), "the rename dialog")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.screen.query("#new-title"), what="rename closed")
        assert app.session.store.conversation(conversation.id).title == HOSTILE_TITLE  # cancelled: nothing renamed

        await pilot.press("ctrl+d")
        await wait_for(pilot, lambda: "Delete" in screen_text(app), what="delete dialog")
        _no_controls(screen_text(app), "the delete dialog")
        assert ESC_SHOWN in screen_text(app)
        await pilot.press("n")


async def test_notifications_show_file_names_as_named_never_as_escapes_or_markup(tiny_models: dict[str, Path],
                                                                                 tmp_path: Path) -> None:
    hostile = tmp_path / "\x1b]0;pwned\x07x.txt"
    loud = tmp_path / "[bold red]loud.txt"
    for path in (hostile, loud):
        path.write_text("a few words\n")
    app = _app(tmp_path / "chat.db", tiny_models["hybrid"])
    async with app.run_test(size=SIZE, notifications=True) as pilot:  # toasts drawn, as in a terminal
        await wait_for(pilot, lambda: "ready" in status(app), what="load")
        composer = app.query_one("#prompt", Composer)
        for path in (hostile, loud):
            composer.focus()
            composer.value = f"/file {path}"
            await pilot.press("enter")
        await wait_for(pilot, lambda: len(app.query_one(AttachmentBar).files) == 2, what="both files attached")
        await wait_for(pilot, lambda: "[bold red]loud.txt (about" in _toasts(app), timeout=10,
                       what="the second toast, its name as written")
        shown = _toasts(app)
        _no_controls(shown, "the toasts")
        assert f"Attached {ESC_SHOWN}]0;pwned\u2407x.txt (about" in shown, shown
        for note in app._notifications:  # what a toast is built from: plain text, nothing left to interpret
            assert not note.markup and not any(c in note.message for c in CONTROLS)


# -- a start leaves settings.toml alone ------------------------------------------------------------------------------


async def test_starting_and_quitting_does_not_rewrite_settings(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'# my settings, with comments\ntheme   =  "qwen-light"   # daylight\n\n[chat]\n'
                     b"thinking_budget = 0  # no limit\n")
    an_hour_ago = path.stat().st_mtime_ns - 3600 * 10**9  # a rewrite, even within the same tick, moves it
    os.utime(path, ns=(an_hour_ago, an_hour_ago))
    before = path.read_bytes()
    app = _app(tmp_path / "chat.db", tiny_models["hybrid"])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="load")
        assert app.theme == "qwen-light"
        # Textual announces the theme change on a later tick: the app then drops the theme it started with
        await wait_for(pilot, lambda: app._theme_at_start is None, what="Textual's announcement of the theme")
        await pilot.press("ctrl+q")
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == an_hour_ago


def test_saving_the_theme_already_saved_writes_nothing() -> None:
    save_theme("qwen-light")
    path = settings_path()
    an_hour_ago = path.stat().st_mtime_ns - 3600 * 10**9
    os.utime(path, ns=(an_hour_ago, an_hour_ago))
    save_theme("qwen-light")
    assert path.stat().st_mtime_ns == an_hour_ago
    save_theme("qwen-dark")  # a different one is written
    assert 'theme = "qwen-dark"' in path.read_text() and path.stat().st_mtime_ns != an_hour_ago
