"""The help screen (F1, /help): every key of the chat as the user has it (settings.toml [keys] applied) and every
slash command, from the tables the app itself runs on (bindings.py, slash_commands.py), so it cannot drift."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from qwen_chat.tui.bindings import PALETTE
from qwen_chat.tui.slash_commands import SLASH_COMMANDS

# the message box's own keys (composer.py): fixed, not in [keys]
BOX_KEYS = (
    ("Enter", "send the message"),
    ("Alt+Enter, Ctrl+J", "a new line in the message"),
    ("Up / Down", "on the first / last line: the prompts sent earlier in this conversation"),
    ("Tab, Right", "complete the slash command being typed"),
    ("Ctrl+G", "edit the message in $VISUAL / $EDITOR"),
    ("Ctrl+P", "command palette: every action by name"),
)
_MORE = {"tools": "MCP tool servers and their tools for this chat; reloads mcp.json",
         "quit": "quit qwen-chat", "help": "this help"}
_NAMED = {"escape": "Esc", "pageup": "PgUp", "pagedown": "PgDn", "enter": "Enter", "tab": "Tab",
          "space": "Space", "slash": "/", "backspace": "Backspace", "delete": "Del"}


def key_label(keys: str) -> str:
    """Textual's key names as a person writes them: "ctrl+t,f10" -> "Ctrl+T, F10"."""
    def one(key: str) -> str:
        *modifiers, name = key.strip().split("+")
        shown = _NAMED.get(name, name.upper() if len(name) == 1 or re.fullmatch(r"f\d+", name) else name)
        return "+".join([*(m.capitalize() for m in modifiers), shown])
    return ", ".join(one(key) for key in keys.split(",") if key.strip())


def _about(action: str, description: str) -> str:
    """The palette's help for an action, without the key it names in brackets (the key may be remapped)."""
    for _, help_text, palette_action in PALETTE:
        if palette_action == action:
            return re.sub(r"\s*\([^()]*\)$", "", help_text)
    return _MORE.get(action, description)


def key_rows(bindings: Iterable[object], keymap: Mapping[str, str]) -> list[tuple[str, str]]:
    """(keys, what they do) for each of the app's bindings, with the user's remaps in place of the defaults."""
    rows = []
    for binding in bindings:
        if not isinstance(binding, Binding):
            continue
        keys = keymap.get(binding.id or "", binding.key)
        rows.append((key_label(keys), _about(binding.action, binding.description)))
    return rows


def _table(rows: Iterable[tuple[str, str]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(ratio=1)
    for left, right in rows:
        table.add_row(Text(left), Text(right))
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Close"), Binding("f1", "dismiss(None)", "Close", show=False)]
    DEFAULT_CSS = """
    HelpScreen .help-dialog { width: 96; max-width: 100%; height: 90%; padding: 0 1;
                              border: round $primary; background: $surface; }
    HelpScreen #help-text { height: 1fr; }
    HelpScreen .help-section { margin: 1 0 0 0; text-style: bold; }
    """

    def __init__(self, bindings: Iterable[object], keymap: Mapping[str, str]) -> None:
        super().__init__()
        self.keys = key_rows(bindings, keymap)

    def compose(self) -> ComposeResult:
        commands = [(f"{c.name} {c.usage}".strip(), c.about) for c in SLASH_COMMANDS]
        with Vertical(classes="help-dialog"):
            yield Label(Text("Keys and commands · ↑ ↓ scroll · Esc closes", style="bold"), markup=False)
            with VerticalScroll(id="help-text"):
                yield Static("Keys (remap them in settings.toml [keys])", classes="help-section", markup=False)
                yield Static(_table(self.keys), markup=False)
                yield Static("In the message box", classes="help-section", markup=False)
                yield Static(_table(BOX_KEYS), markup=False)
                yield Static("Typed alone in the message box (anything else is sent to the model)",
                             classes="help-section", markup=False)
                yield Static(_table(commands), markup=False)

    def on_mount(self) -> None:
        self.query_one("#help-text").focus()
