"""Copy (code blocks and the system clipboard), versions, personas and context screens, driven with Pilot."""

from __future__ import annotations

import shutil
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.app import App
from textual.screen import Screen
from textual.widgets import Label, Markdown, OptionList, Static, TextArea

import qwen_chat.tui
from qwen_chat.qwen3.context_presets import ContextPreset
from qwen_chat.store.database import Store
from qwen_chat.system import clipboard
from qwen_chat.system.clipboard import CodeBlock, code_blocks, system_copy
from qwen_chat.tui.conversation_screens import (
    MARK,
    ContextScreen,
    CopyScreen,
    PersonaForm,
    PersonasScreen,
    VersionsScreen,
    copy_choices,
    current_presets,
)

from helpers import SIZE, screen_text

APP_CSS = Path(qwen_chat.tui.__file__).parent / "app.tcss"  # the real dialog styles

TRICKY = """Here is **bold** and [bold]not markup[/bold] and <think>not thinking</think>.

```python
print("[red]hi[/red]")
```

Then a tilde fence with a longer backtick fence inside:

~~~~ markdown extra words
````js
const a = `x`;
````
~~~~

````
```
nested
```
````

1. In a list:

   ```sh
   ls -la
     indented more
   ```

```bash
echo cut off
echo still"""


# -- code blocks --


def test_code_blocks_on_tricky_markdown() -> None:
    assert code_blocks(TRICKY) == [
        CodeBlock("python", 'print("[red]hi[/red]")'),
        CodeBlock("markdown", "````js\nconst a = `x`;\n````"),
        CodeBlock("", "```\nnested\n```"),
        CodeBlock("sh", "ls -la\n  indented more"),
        CodeBlock("bash", "echo cut off\necho still"),  # unclosed: runs to the end
    ]


def test_code_blocks_edge_cases() -> None:
    assert code_blocks("no code here, just `inline` and ``double``") == []
    assert code_blocks("```x```\nnot a block") == []  # backticks in the info string: inline code
    assert code_blocks("```\n\n```") == [CodeBlock("", "")]
    assert code_blocks("~~~\na\n```\nb\n~~~") == [CodeBlock("", "a\n```\nb")]  # other fence char never closes
    assert code_blocks("```c\r\nint x;\r\n```\r\n") == [CodeBlock("c", "int x;")]
    assert code_blocks("```py\nx = 1\n") == [CodeBlock("py", "x = 1")]  # the final newline is no extra line
    assert code_blocks("```\na\x0cb\n```") == [CodeBlock("", "a\x0cb")]  # a form feed is not a line break


def test_copy_choices_label_the_blocks() -> None:
    choices = copy_choices(TRICKY)
    assert choices[0] == (f"Whole message ({len(TRICKY.splitlines())} lines)", TRICKY)
    assert choices[1] == ('Code block 1 · python · print("[red]hi[/red]")', 'print("[red]hi[/red]")')
    assert choices[3][0] == "Code block 3 · text · ```…"
    assert choices[5][0] == "Code block 5 · bash · echo cut off…"
    assert copy_choices("one line") == [("Whole message (1 line)", "one line")]


# -- system clipboard --


def _fake_tool(folder: Path, name: str, body: str) -> None:
    folder.mkdir(exist_ok=True)
    script = folder / name
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def linux_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clipboard, "_in_wsl", lambda: False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)


linux_only = pytest.mark.skipif(sys.platform != "linux", reason="the Linux clipboard tools")


@linux_only
def test_system_copy_without_a_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linux_display: None) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert system_copy("hello") is None


@linux_only
@pytest.mark.parametrize(("tool", "variable", "args"), [("xclip", "DISPLAY", "-selection clipboard"),
                                                         ("wl-copy", "WAYLAND_DISPLAY", "")])
def test_system_copy_feeds_the_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linux_display: None,
                                    tool: str, variable: str, args: str) -> None:
    cat = shutil.which("cat")
    assert cat is not None
    out, got_args = tmp_path / "clipboard.txt", tmp_path / "args.txt"
    _fake_tool(tmp_path / "bin", tool, f'echo "$@" > "{got_args}"\n"{cat}" > "{out}"')
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # cat by its full path: nothing else is found
    monkeypatch.setenv(variable, ":0" if variable == "DISPLAY" else "wayland-0")
    text = "é → 你好 [bold]not markup[/bold]\nline two\n"
    assert system_copy(text) == tool
    assert out.read_text(encoding="utf-8") == text
    assert got_args.read_text().strip() == args


@linux_only
def test_system_copy_failing_or_hanging_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            linux_display: None) -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("DISPLAY", ":0")
    _fake_tool(tmp_path / "bin", "xclip", "exit 1")
    assert system_copy("x") is None
    _fake_tool(tmp_path / "bin", "xclip", f'exec "{sleep}" 30')
    monkeypatch.setattr(clipboard, "TIMEOUT", 0.3)
    assert system_copy("x") is None  # killed at the timeout, no exception
    _fake_tool(tmp_path / "bin", "xsel", "exit 0")  # the next tool is tried
    assert system_copy("x") == "xsel"


# -- screens --


class Host(App[None]):
    """A bare app that opens one screen and collects what it dismisses with."""

    CSS_PATH = str(APP_CSS)

    def __init__(self, make: Callable[[], Screen]) -> None:
        super().__init__()
        self.make = make
        self.results: list[object] = []

    def on_mount(self) -> None:
        self.push_screen(self.make(), self.results.append)


def option_texts(app: App, selector: str) -> list[str]:
    listing = app.screen.query_one(selector, OptionList)
    return [str(listing.get_option_at_index(i).prompt) for i in range(listing.option_count)]


async def test_copy_screen_returns_the_chosen_code_block() -> None:
    app = Host(lambda: CopyScreen(TRICKY, "Copy answer"))
    async with app.run_test(size=SIZE) as pilot:
        assert isinstance(app.screen, CopyScreen)
        shown = screen_text(app)
        assert "Code block 1 · python · print(\"[red]hi[/red]\")" in shown  # literally, not as markup
        assert "Enter copies" in shown
        await pilot.press("down", "down", "enter")
        await pilot.pause()
    assert app.results == ["````js\nconst a = `x`;\n````"]


async def test_copy_screen_whole_message_and_escape() -> None:
    app = Host(lambda: CopyScreen(TRICKY, "Copy"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter")
        await pilot.pause()
        app.push_screen(CopyScreen(TRICKY, "Copy"), app.results.append)
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
    assert app.results == [TRICKY, None]


async def test_versions_screen_shows_every_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "chat.db")
    conversation = store.create_conversation()
    first = store.add_user_message(conversation.id, "First [bold]question[/bold]")
    answer = store.start_answer(conversation.id, "m", "thinking", {})
    store.finish_answer(answer.id, "stopped", "", "First answer with `<think>` text", True)
    second = store.edit_user_message(first.id, "Second question")
    answer = store.start_answer(conversation.id, "m", "thinking", {})
    store.finish_answer(answer.id, "complete", "", "Second **answer**", True)
    third = store.edit_user_message(second.id, "Third question")
    answer = store.start_answer(conversation.id, "m", "thinking", {})
    store.finish_answer(answer.id, "complete", "", "Third answer", True)
    versions = store.earlier_versions(third.id)
    current = [m for m in store.messages(conversation.id) if m.id >= third.id]
    assert len(versions) == 2

    app = Host(lambda: VersionsScreen(versions, current))
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, VersionsScreen)
        statics = [str(w.render()) for w in screen.query(Static) if not isinstance(w, Label)]
        sources = [w.source for w in screen.query(Markdown)]
        assert [s for s in statics if s.startswith("Version")] == [
            "Version 1 of 3", "Version 2 of 3", "Version 3 of 3 (current)"]
        for question in ("First [bold]question[/bold]", "Second question", "Third question"):
            assert question in statics
        assert sources == ["First answer with `<think>` text", "Second **answer**", "Third answer"]
        assert "Qwen (stopped)" in statics
        shown = screen_text(app)
        assert "Version 1 of 3" in shown and "First [bold]question[/bold]" in shown
        await pilot.press("escape")
        await pilot.pause()
    assert app.results == [None]
    store.close()


async def test_personas_screen_add_use_and_delete(tmp_path: Path) -> None:
    store = Store(tmp_path / "chat.db")
    app = Host(lambda: PersonasScreen(store, ""))
    async with app.run_test(size=SIZE) as pilot:
        assert option_texts(app, "#personas") == [f"{MARK}(no persona: no system prompt)  (in use)"]
        await pilot.press("n")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, PersonaForm)
        await pilot.press("ctrl+s")  # nothing typed: the store's reason is shown, the form stays
        await pilot.pause()
        error = form.query_one("#persona-error", Label)
        assert error.display and "needs a name" in str(error.render())
        await pilot.press(*"Pirate", "enter")
        area = form.query_one("#persona-prompt", TextArea)
        assert area.has_focus
        area.insert("Talk like a [bold]pirate[/bold].\nAlways.")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, PersonasScreen)
        assert [(p.name, p.prompt) for p in store.personas()] == [
            ("Pirate", "Talk like a [bold]pirate[/bold].\nAlways.")]
        texts = option_texts(app, "#personas")
        assert texts[1] == "  Pirate · Talk like a [bold]pirate[/bold].…"
        assert app.screen.query_one("#personas", OptionList).highlighted == 1  # the new one
        await pilot.press("enter")
        await pilot.pause()
    assert app.results == ["Talk like a [bold]pirate[/bold].\nAlways."]

    prompt = store.personas()[0].prompt
    app = Host(lambda: PersonasScreen(store, prompt))
    async with app.run_test(size=SIZE) as pilot:
        texts = option_texts(app, "#personas")
        assert texts[0].startswith("  (no persona") and texts[1].startswith(f"{MARK}Pirate")
        assert texts[1].endswith("(in use)")
        assert "Enter uses · n new · e edit · d delete" in screen_text(app)
        await pilot.press("d")
        await pilot.pause()
        assert "Delete persona “Pirate”?" in screen_text(app)
        await pilot.press("y")
        await pilot.pause()
        assert store.personas() == []
        assert len(option_texts(app, "#personas")) == 1
        await pilot.press("escape")
        await pilot.pause()
    assert app.results == [None]
    store.close()


async def test_personas_choose_none_and_draft_from_the_conversation(tmp_path: Path) -> None:
    store = Store(tmp_path / "chat.db")
    store.save_persona("coder", "You write code.")
    app = Host(lambda: PersonasScreen(store, "  You are terse.  "))
    async with app.run_test(size=SIZE) as pilot:
        assert not any(t.endswith("(in use)") for t in option_texts(app, "#personas"))  # the prompt is unsaved
        await pilot.press("n")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, PersonaForm)
        assert form.query_one("#persona-prompt", TextArea).text == "You are terse."
        await pilot.press(*"terse", "ctrl+s")
        await pilot.pause()
        assert {p.name: p.prompt for p in store.personas()} == {"coder": "You write code.",
                                                                "terse": "You are terse."}
        assert option_texts(app, "#personas")[2] == f"{MARK}terse · You are terse.  (in use)"
        await pilot.press("home", "enter")  # the first entry: no system prompt
        await pilot.pause()
    assert app.results == [""]
    store.close()


PRESETS = [
    ContextPreset("auto", None, "Auto: the largest that fits this machine's memory"),
    ContextPreset("native", 40960, "Native: 40,960 tokens"),
    ContextPreset("64k", 65536, "64K: 65,536 tokens (YaRN ×2)"),
    ContextPreset("128k", 131072, "128K: 131,072 tokens (YaRN ×4)"),
]


def test_current_presets() -> None:
    assert current_presets(PRESETS, 65536) == {"64k"}  # chosen with F7, /context or [chat] context
    assert current_presets(PRESETS, 12288, planner_chose=True) == {"auto"}
    assert current_presets(PRESETS, 0, planner_chose=True) == {"auto"}
    # issue 23: started on auto, the planner chose the native length: auto is what is in use, not "native"
    assert current_presets(PRESETS, 40960, planner_chose=True) == {"auto"}
    assert current_presets(PRESETS, 40960) == {"native"}
    assert current_presets(PRESETS, 12288) == set()  # --ctx 12288: no preset is in use


async def test_context_screen_marks_the_current_and_returns_the_chosen() -> None:
    note = "Changing the context reloads the model; the conversation stays."
    app = Host(lambda: ContextScreen(PRESETS, 65536, note))
    async with app.run_test(size=SIZE) as pilot:
        texts = option_texts(app, "#context-presets")
        assert texts[2] == f"{MARK}64K: 65,536 tokens (YaRN ×2)  (in use)"
        assert [t.startswith(MARK) for t in texts] == [False, False, True, False]
        shown = screen_text(app)
        assert note in shown and "Context length (now 65,536 tokens)" in shown
        assert app.screen.query_one("#context-presets", OptionList).highlighted == 2
        await pilot.press("down", "enter")
        await pilot.pause()
        app.push_screen(ContextScreen(PRESETS, 40960, note, planner_chose=True), app.results.append)
        await pilot.pause()
        texts = option_texts(app, "#context-presets")
        assert texts[0] == (f"{MARK}Auto: the largest that fits this machine's memory · now 40,960 tokens, the "
                            "native length  (in use)")
        assert [t.startswith(MARK) for t in texts] == [True, False, False, False]
        await pilot.press("escape")
        await pilot.pause()
    assert app.results == ["128k", None]
