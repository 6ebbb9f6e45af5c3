"""The composer: a multi-line prompt box. Enter sends; Shift+Enter (where the terminal reports it), Alt+Enter
and Ctrl+J insert a newline; a paste keeps every line exactly; Up on the first line and Down on the last walk
the prompts sent in this conversation; Ctrl+G hands the draft to $VISUAL / $EDITOR. A slash command being
typed is completed: the rest shows dimmed after the cursor, Tab (or Right) takes it, and the commands it could
still become are listed under the box (tui/slash_commands.py).

The box grows with its text up to ten lines, then scrolls (app.tcss).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from textual import _ansi_sequences, events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea

from qwen_chat.tui.external_editor import EditorError, edit_in_editor
from qwen_chat.tui.slash_commands import candidates_hint, completion

# "shift+\r": xterm's modifyOtherKeys form of Shift+Enter, as Textual names it
NEWLINE_KEYS = ("shift+enter", "alt+enter", "ctrl+j", "ctrl+enter", "shift+\r")


def _teach_alt_enter() -> None:
    """Outside the kitty keyboard protocol (tmux, most ssh sessions) Alt+Enter arrives as ESC CR, which Textual
    8.2 reads as a plain Enter: the prompt would be sent instead of getting a new line. Its table of escape
    sequences (private, pinned with Textual; tests/test_composer.py checks the parser) learns the pair."""
    table = cast(dict[str, Any], _ansi_sequences.ANSI_SEQUENCES_KEYS)
    table.setdefault("\x1b\r", (SimpleNamespace(value="alt+enter"),))


_teach_alt_enter()


class Composer(TextArea):
    BINDINGS = [Binding("ctrl+g", "external_editor", "Editor", show=False, id="external-editor")]

    class Submitted(Message):
        def __init__(self, composer: Composer, value: str) -> None:
            super().__init__()
            self.composer = composer
            self.value = value

        @property
        def control(self) -> Composer:
            return self.composer

    def __init__(self, placeholder: str = "", id: str | None = None) -> None:
        super().__init__(soft_wrap=True, tab_behavior="focus", show_line_numbers=False,
                         highlight_cursor_line=False, placeholder=placeholder, id=id)
        self.prompts: list[str] = []  # this conversation's prompts, oldest first (not TextArea's undo history)
        self._walk: int | None = None  # where in the history Up/Down is, None: at the draft
        self._draft = ""

    @property
    def value(self) -> str:
        return self.text

    @value.setter
    def value(self, text: str) -> None:
        self.load_text(text)
        self.move_cursor(self.document.end)  # typing goes on at the end, as in any editor
        self.update_suggestion()  # load_text asked with the cursor still at the start

    def set_history(self, prompts: list[str]) -> None:
        self.prompts, self._walk = prompts, None

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self._walk = None
            self.post_message(self.Submitted(self, self.text))
            return
        if event.key == "tab" and self.suggestion:  # else Tab moves the focus on, as it always did
            event.stop()
            event.prevent_default()
            self.insert(self.suggestion)
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.insert("\n")
            # any other key: Textual calls TextArea._on_key next itself (handlers run along the MRO)

    def update_suggestion(self) -> None:
        """TextArea's hook after every edit: a slash command's completion, with the cursor at the draft's end."""
        at_end = self.selection.is_empty and self.cursor_location == self.document.end
        self.suggestion = completion(self.text) if at_end else ""
        self.border_subtitle = candidates_hint(self.text)

    def watch_selection(self) -> None:
        """The completion shows only with the cursor at the draft's end (Right anywhere else moves it)."""
        self.update_suggestion()

    def action_cursor_up(self, select: bool = False) -> None:
        if select or not self.cursor_at_first_line or not self.prompts or self._walk == 0:
            super().action_cursor_up(select)
            return
        if self._walk is None:
            self._draft, self._walk = self.text, len(self.prompts)
        self._walk -= 1
        self.value = self.prompts[self._walk]

    def action_cursor_down(self, select: bool = False) -> None:
        if select or not self.cursor_at_last_line or self._walk is None:
            super().action_cursor_down(select)
            return
        self._walk += 1
        if self._walk >= len(self.prompts):
            self._walk = None
            self.value = self._draft
        else:
            self.value = self.prompts[self._walk]

    def action_external_editor(self) -> None:
        """Ctrl+G: the draft in $VISUAL or $EDITOR (the app steps aside while it runs); what is saved comes back."""
        try:
            edited = edit_in_editor(self.value, self.app.suspend)
        except EditorError as exc:
            self.notify(str(exc), severity="error", timeout=8)
            return
        self.value = edited
        self.focus()
