"""Help inside the app (issue 23), driven with Pilot on the FakeEngine: /help and F1 show every key (as remapped
in settings.toml [keys]) and every slash command, and nothing is sent; a mistyped /word is kept and said, a second
Enter sends it; the composer completes slash commands; every screen's title is whole at 80 columns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.screen import Screen

from qwen_chat.system.paths import config_dir
from qwen_chat.tui.app import QwenChatApp
from qwen_chat.tui.composer import Composer
from qwen_chat.tui.help_screen import HelpScreen, key_label
from qwen_chat.tui.messages import AssistantMessage, UserMessage
from qwen_chat.tui.presets_screen import preset_title
from qwen_chat.tui.slash_commands import NAMES, completion, unknown_command

from fake_engine import FakeEngine, Reply
from helpers import SIZE, make_app, screen_text, status, type_and_send, wait_for


async def ready(pilot: Pilot, app: QwenChatApp) -> Composer:
    await wait_for(pilot, lambda: "ready" in status(app), what="model load")
    composer = app.query_one("#prompt", Composer)
    composer.focus()
    return composer


def sent(app: QwenChatApp) -> list[str]:
    current = app.conversation.current
    return [m.content for m in app.session.store.messages(current.id)] if current else []


def test_completion_and_unknown_words() -> None:
    assert completion("/he") == "lp"
    assert completion("/t") == "hink"  # the first of /think and /tools (the list under the box shows both)
    assert completion("/bud") == "get "  # it takes an argument: the space comes with it
    assert completion("/context n") == "ative"
    assert completion("/file c") == "lear"
    assert completion("/think") == "" and completion("/think about this") == ""
    assert completion("hello /he") == "" and completion("/he\nmore") == ""
    assert unknown_command("/hlep me") == "/hlep"
    assert unknown_command("/usr/bin is a folder") is None  # a path, not a command
    assert unknown_command("/think explain this") is None  # Qwen3's soft switch at the start of a message
    assert unknown_command("https://example.com") is None and unknown_command("") is None
    assert key_label("ctrl+t,f10") == "Ctrl+T, F10" and key_label("escape") == "Esc"


async def test_help_and_f1_show_the_remapped_keys_and_every_command_and_send_nothing(
        tiny_models: dict[str, Path], tmp_path: Path) -> None:
    config_dir().mkdir(parents=True, exist_ok=True)
    (config_dir() / "settings.toml").write_text('[keys]\ntoggle-thinking = "f10"\n', encoding="utf-8")
    engine = FakeEngine.scripted()
    app = make_app(tmp_path / "chat.db", tiny_models["hybrid"], engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await type_and_send(pilot, "/help")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help screen")
        await wait_for(pilot, lambda: "Switch thinking" in screen_text(app), what="the help drawn")
        shown = screen_text(app)
        assert "F10" in shown and "Switch thinking for this conversation" in shown and "Ctrl+T" not in shown
        assert "Ctrl+O" in shown and "F9" in shown and "Tab, Right" in shown
        await pilot.press("end")  # the commands are below the keys
        await wait_for(pilot, lambda: "/no_think" in screen_text(app), what="the commands scrolled to")
        shown = screen_text(app)
        assert all(name in shown for name in ("/budget [N | off]", "/context [KEY]", "/file PATH | clear", "/tools",
                                              "/help", "/think"))
        assert app.query_one("#prompt", Composer).value == ""
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen), what="closed")
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help screen by F1")
        await pilot.press("f1")  # F1 again closes it
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen), what="closed by F1")
        assert sent(app) == [] and not engine.requests[1:] and not app.query(UserMessage)


async def test_a_mistyped_command_is_kept_and_said_and_a_second_enter_sends_it(
        tiny_models: dict[str, Path], tmp_path: Path) -> None:
    engine = FakeEngine.scripted([Reply("Fine."), Reply("Thinking off.")])
    app = make_app(tmp_path / "chat.db", tiny_models["hybrid"], engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        composer = await ready(pilot, app)
        await type_and_send(pilot, "/thnik")
        note = await wait_for(pilot, lambda: next((n.message for n in app._notifications if "/thnik" in n.message),
                                                  None), what="the warning")
        assert "Did you mean /think?" in note and "Enter again" in note
        assert composer.value == "/thnik" and sent(app) == []
        await pilot.press("enter")  # meant as it is
        await wait_for(pilot, lambda: len(app.query(AssistantMessage)) == 1, what="the answer")
        assert sent(app)[0] == "/thnik"
        await type_and_send(pilot, "/no_think why is the sky blue?")  # a soft switch in a message: sent at once
        await wait_for(pilot, lambda: len(app.query(AssistantMessage)) == 2, what="the second answer")
        assert sent(app)[2] == "/no_think why is the sky blue?"


async def test_the_composer_completes_slash_commands(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    engine = FakeEngine.scripted()
    app = make_app(tmp_path / "chat.db", tiny_models["hybrid"], engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        composer = await ready(pilot, app)
        await pilot.press("slash", "t")
        assert composer.suggestion == "hink" and composer.border_subtitle == "/think /tools · Tab completes"
        assert "/think /tools · Tab completes" in screen_text(app)
        await pilot.press("o", "tab")
        assert composer.value == "/tools" and composer.has_focus  # Tab completed, the focus stayed
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.screen.__class__.__name__ == "ToolsScreen", what="the tools panel")
        await pilot.press("escape")
        composer.focus()
        await pilot.press("slash", "c", "o", "right")  # Right takes the completion too
        assert composer.value == "/context " and composer.border_subtitle == ""
        await pilot.press("n", "tab")
        assert composer.value == "/context native"
        composer.value = ""
        await pilot.press("tab")  # nothing to complete: Tab moves the focus on, as before
        assert not composer.has_focus and sent(app) == []


# -- every screen's title at 80 columns ---------------------------------------------------------------------------

Opener = Callable[[Pilot], Awaitable[None]]


async def press(pilot: Pilot, *keys: str) -> None:
    pilot.app.query_one("#prompt", Composer).focus()
    await pilot.press(*keys)


async def palette(pilot: Pilot) -> None:
    await press(pilot, "ctrl+p")


F3 = "Models · ★ recommended · ✓ on disk · Enter loads or downloads · Esc closes"
CTRL_O = "Attach a file: type its path (Enter) or pick it below (Tab) · Esc closes"
SCREENS: list[tuple[str, Opener, str]] = [
    ("HelpScreen", lambda p: press(p, "f1"), "Keys and commands · ↑ ↓ scroll · Esc closes"),
    ("ModelsScreen", lambda p: press(p, "f3"), F3),
    ("DownloadsScreen", lambda p: press(p, "f4"), "Downloads · p pause/resume · x cancel · Esc closes (they go on)"),
    ("SearchScreen", lambda p: press(p, "ctrl+f"), "Search all conversations (Enter opens, Esc closes)"),
    ("RenameDialog", lambda p: press(p, "f2"), "Rename conversation"),
    ("PresetsScreen", lambda p: press(p, "f5"), "Sampling preset: Qwen3, thinking"),
    ("PersonasScreen", lambda p: press(p, "f6"), "Personas: saved system prompts for this conversation"),
    ("ContextScreen", lambda p: press(p, "f7"), "Context length (now 4,096 tokens)"),
    ("VersionsScreen", lambda p: press(p, "f8"), "This turn has 2 versions · ↑ ↓ PgUp PgDn scroll · Esc closes"),
    ("CopyScreen", lambda p: press(p, "ctrl+y"), "Copy"),
    ("ToolsScreen", lambda p: press(p, "f9"), "Tools for this chat · Space: on/off · Tab moves · r reloads mcp.json"),
    ("ConfirmDialog", lambda p: press(p, "ctrl+d"), "and all its messages?"),
    ("FilePicker", lambda p: press(p, "ctrl+o"), CTRL_O),
    ("CommandPalette", palette, "Search for commands…"),
]


@pytest.fixture(scope="module")
def title_lines(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Each screen opened in turn at 80×24 on a conversation with a regenerated answer that has a code block
    (so F8 and Ctrl+Y have something to show): what the terminal showed, by screen."""
    import asyncio

    folder = tmp_path_factory.mktemp("titles")
    engine = FakeEngine.scripted([Reply("One:\n```py\nx = 1\n```\n"), Reply("Two:\n```py\ny = 2\n```\n")])
    app = make_app(folder / "chat.db", tiny_models["hybrid"], engine=engine)
    shown: dict[str, str] = {}

    async def run() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(pilot, app)
            await type_and_send(pilot, "hi")
            await wait_for(pilot, lambda: len(app.query(AssistantMessage)) == 1 and app.session.busy() is None,
                           what="the answer")
            await press(pilot, "ctrl+r")
            await wait_for(pilot, lambda: app.query(AssistantMessage) and app.query(AssistantMessage)[-1].versions == 2
                           and app.session.busy() is None, what="the second version")
            for name, opener, _ in SCREENS:
                await opener(pilot)
                screen: Screen = await wait_for(pilot, lambda n=name: type(app.screen).__name__ == n and app.screen,
                                                what=name)
                await pilot.pause(0.2)
                shown[name] = screen_text(app)
                while app.screen is screen:
                    await pilot.press("escape")
                    await pilot.pause()

    asyncio.run(run())
    return shown


@pytest.mark.parametrize(("name", "title"), [(name, title) for name, _, title in SCREENS])
def test_every_title_is_whole_at_80_columns(title_lines: dict[str, str], name: str, title: str) -> None:
    assert any(title in line for line in title_lines[name].splitlines()), title_lines[name]


def test_every_command_is_in_the_help() -> None:
    assert set(NAMES) == {"/help", "/think", "/no_think", "/budget", "/context", "/file", "/tools"}


def test_the_presets_title_names_the_family_in_use() -> None:
    assert preset_title("instruct-2507", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf") == \
        "Sampling preset: a model that does not think (Instruct-2507 values)"  # issue 23: not "instruct-2507"
    assert preset_title("instruct-2507", "Qwen3-4B-Instruct-2507-Q4_K_M.gguf") == "Sampling preset: Qwen3 Instruct-2507"
    assert preset_title("instruct-2507", "") == "Sampling preset: no model loaded yet (Instruct-2507 values)"
    assert preset_title("hybrid-non-thinking", "Qwen3-8B-Q4_K_M.gguf") == "Sampling preset: Qwen3, not thinking"


async def test_f5_on_a_model_that_is_no_qwen3_says_so(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    app = make_app(tmp_path / "chat.db", tiny_models["none"], engine=FakeEngine.scripted())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        await pilot.press("f5")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "PresetsScreen", what="F5")
        await wait_for(pilot, lambda: "none.gguf · full-precision model" in screen_text(app), what="the model named")
        assert "Sampling preset: a model that does not think (Instruct-2507 values)" in screen_text(app)
