"""Screens about the open conversation: copy a message or one of its code blocks, a turn's earlier versions,
personas (saved system prompts) and the context length.

User and model text is shown as plain Text or Markdown after `printable()`, never as markup: a model writing
"[bold]" or an escape sequence must show exactly that.
"""

from __future__ import annotations

from typing import Protocol

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Markdown, OptionList, Static, TextArea
from textual.widgets.option_list import Option

from qwen_chat.qwen3.context_presets import ContextPreset
from qwen_chat.store.records import Message, Persona, StoreError
from qwen_chat.system.clipboard import code_blocks, system_copy
from qwen_chat.tui.dialogs import ConfirmDialog
from qwen_chat.tui.printable import printable, printable_line

MARK = "● "  # the entry in use
NO_MARK = "  "


def first_line(text: str, limit: int = 50) -> str:
    """The first non-blank line, spaces collapsed, with "…" when anything was left out."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    line = " ".join(lines[0].split())
    if len(line) > limit:
        return line[: limit - 1] + "…"
    return line + ("…" if len(lines) > 1 else "")


def _entry(label: str, detail: str = "", current: bool = False) -> Text:
    text = Text(MARK if current else NO_MARK, style="bold" if current else "")
    text.append(printable(label), style="bold" if current else "")
    if detail:
        text.append(" · " + printable(detail), style="dim")
    if current:
        text.append("  (in use)", style="italic")
    return text


# -- copy --


class PersonaBook(Protocol):
    """Where personas are kept (session/conversation.py's OpenConversation; the tests hand a Store)."""

    def personas(self) -> list[Persona]: ...

    def save_persona(self, name: str, prompt: str) -> Persona: ...

    def delete_persona(self, name: str) -> bool: ...


def copy_text(app: App[None], text: str) -> None:
    """Onto the clipboards, and say so."""
    app.copy_to_clipboard(text)  # OSC 52: reaches the local clipboard over SSH in most terminals
    tool = system_copy(text)  # and the desktop's own clipboard tool where there is one
    app.notify(f"Copied {len(text):,} characters" + (f" (also with {tool})" if tool else ""), timeout=3)


def copy_choices(text: str) -> list[tuple[str, str]]:
    """(label, text to copy): the whole message, then each fenced code block. One entry: copy directly."""
    lines = len(text.splitlines()) or 1
    choices = [(f"Whole message ({lines} line{'' if lines == 1 else 's'})", text)]
    for k, block in enumerate(code_blocks(text), 1):
        choices.append((f"Code block {k} · {block.language or 'text'} · {first_line(block.code)}", block.code))
    return choices


class CopyScreen(ModalScreen[str | None]):
    """Dismisses with the text to copy, or None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]
    DEFAULT_CSS = """
    CopyScreen .copy-dialog {
        width: 90; max-width: 100%; height: auto;
        padding: 1 2; border: round $primary; background: $surface;
    }
    CopyScreen #copy-choices { max-height: 20; }
    CopyScreen .conversation-hint { width: 100%; color: $text-muted; margin-top: 1; }
    """

    def __init__(self, text: str, title: str = "Copy") -> None:
        super().__init__()
        self.title_text = title
        self.choices = copy_choices(text)

    def compose(self) -> ComposeResult:
        # not the app's .dialog: its width (60) would win over this screen's CSS, and code lines need more
        with Vertical(classes="copy-dialog"):
            yield Label(Text(printable(self.title_text), style="bold"), markup=False)
            yield OptionList(*(Option(Text(printable(label)), id=str(i)) for i, (label, _) in enumerate(self.choices)),
                             id="copy-choices", markup=False)
            yield Label("Enter copies · Esc cancels", classes="conversation-hint", markup=False)

    def on_mount(self) -> None:
        self.query_one("#copy-choices", OptionList).focus()

    @on(OptionList.OptionSelected, "#copy-choices")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.choices[event.option_index][1])


# -- versions --

_ROLE = {"user": "You", "assistant": "Qwen", "system": "System prompt"}


def _message_widgets(message: Message) -> list[Widget]:
    heading = Text(_ROLE.get(message.role, message.role), style="bold")
    notes = [message.status] if message.status != "complete" else []
    if message.error:
        notes.append(printable(message.error))
    if notes:
        heading.append(" (" + " · ".join(notes) + ")", style="dim")
    widgets: list[Widget] = [Static(heading, classes="version-role", markup=False)]
    if message.role == "assistant":
        # Markdown never reads Rich markup; printable() keeps control characters away from the terminal
        widgets.append(Markdown(printable(message.content), classes="version-answer"))
    else:
        widgets.append(Static(Text(printable(message.content)), classes="version-user", markup=False))
    return widgets


class VersionsScreen(ModalScreen[None]):
    """Every version of a turn, oldest first, the current one last."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]
    DEFAULT_CSS = """
    VersionsScreen #versions { height: 1fr; }
    VersionsScreen .conversation-hint { width: 100%; color: $text-muted; }
    VersionsScreen .version-heading { margin-top: 1; text-style: bold; background: $primary 15%; padding: 0 1; }
    VersionsScreen .version-role { margin-top: 1; width: 100%; color: $text-muted; }
    VersionsScreen .version-user { padding: 0 1; border-left: thick $primary; }
    VersionsScreen .version-answer { margin: 0; padding: 0 1; }
    """

    def __init__(self, versions: list[list[Message]], current: list[Message]) -> None:
        super().__init__()
        self.versions = [*versions, current]

    def compose(self) -> ComposeResult:
        total = len(self.versions)
        with Vertical(classes="models-dialog"):
            yield Label(f"This turn has {total} versions · ↑ ↓ PgUp PgDn scroll · Esc closes",
                        classes="conversation-hint", markup=False)
            with VerticalScroll(id="versions"):
                for k, run in enumerate(self.versions, 1):
                    heading = f"Version {k} of {total}" + (" (current)" if k == total else "")
                    yield Static(heading, classes="version-heading", markup=False)
                    for message in run:
                        yield from _message_widgets(message)

    def on_mount(self) -> None:
        self.query_one("#versions", VerticalScroll).focus()


# -- personas --


class PersonaForm(ModalScreen[Persona | None]):
    """Add a persona, or replace the one with the same name; dismisses with the saved persona or None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel"), Binding("ctrl+s", "save", "Save")]
    DEFAULT_CSS = """
    PersonaForm .persona-form {
        width: 80; max-width: 100%; height: auto;
        padding: 1 2; border: round $primary; background: $surface;
    }
    PersonaForm #persona-prompt { height: 10; }
    PersonaForm #persona-error { color: $error; display: none; }
    PersonaForm .buttons Button { margin-right: 2; }
    PersonaForm .conversation-hint { width: 100%; color: $text-muted; }
    """

    def __init__(self, book: PersonaBook, name: str = "", prompt: str = "") -> None:
        super().__init__()
        self.book = book
        # the boxes draw what they hold: a name or prompt from an imported file shows (and, if saved, keeps)
        # its control characters as visible symbols, never as escape sequences sent to the terminal
        self.initial_name, self.initial_prompt = printable_line(name), printable(prompt)

    def compose(self) -> ComposeResult:
        with Vertical(classes="persona-form"):  # wider than .dialog
            yield Label("Persona (saving under an existing name replaces its prompt)", markup=False)
            yield Label("Enter in the name goes to the prompt · Tab moves · Ctrl+S saves · Esc cancels",
                        classes="conversation-hint", markup=False)
            yield Input(self.initial_name, placeholder="name", id="persona-name")
            yield TextArea(self.initial_prompt, id="persona-prompt")
            yield Label("", id="persona-error", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Save (Ctrl+S)", variant="primary", id="persona-save")
                yield Button("Cancel (Esc)", id="persona-cancel")

    def on_mount(self) -> None:
        self.query_one("#persona-name", Input).focus()

    @on(Input.Submitted, "#persona-name")
    def _to_prompt(self) -> None:
        self.query_one("#persona-prompt", TextArea).focus()  # Enter in the prompt is a newline, not save

    @on(Button.Pressed, "#persona-save")
    def _save_pressed(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#persona-cancel")
    def _cancel_pressed(self) -> None:
        self.dismiss(None)

    def action_save(self) -> None:
        name = self.query_one("#persona-name", Input).value
        prompt = self.query_one("#persona-prompt", TextArea).text
        try:
            persona = self.book.save_persona(name, prompt)
        except StoreError as exc:
            error = self.query_one("#persona-error", Label)
            error.update(Text(printable(str(exc))))
            error.display = True
            return
        self.dismiss(persona)


class PersonasScreen(ModalScreen[str | None]):
    """Dismisses with the system prompt to use ("" for none), or None to leave it as it is."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel"), Binding("n", "new", "New"),
                Binding("e", "edit", "Edit"), Binding("d", "delete", "Delete")]
    DEFAULT_CSS = """
    PersonasScreen #personas { height: 1fr; max-height: 100%; }
    PersonasScreen .conversation-hint { width: 100%; color: $text-muted; margin-top: 1; }
    """

    def __init__(self, book: PersonaBook, current_prompt: str) -> None:
        super().__init__()
        self.book = book
        self.current_prompt = current_prompt.strip()  # the store strips saved prompts: compare like with like
        self.personas: list[Persona] = []

    def compose(self) -> ComposeResult:
        with Vertical(classes="models-dialog"):
            yield Label("Personas: saved system prompts for this conversation", markup=False)
            yield OptionList(id="personas", markup=False)
            yield Label("Enter uses · n new · e edit · d delete · Esc cancels", classes="conversation-hint",
                        markup=False)

    def on_mount(self) -> None:
        self.refresh_personas()
        self.query_one("#personas", OptionList).focus()

    def refresh_personas(self, highlight: str | None = None) -> None:
        """Re-read the personas; highlight the one named `highlight`, else the one in use."""
        try:
            self.personas = self.book.personas()
        except StoreError as exc:
            self.app.notify(str(exc), severity="error")
            self.personas = []
        options = [Option(_entry("(no persona: no system prompt)", current=not self.current_prompt), id="none")]
        options += [Option(_entry(p.name, first_line(p.prompt), p.prompt == self.current_prompt), id=f"p{p.id}")
                    for p in self.personas]
        listing = self.query_one("#personas", OptionList)
        listing.set_options(options)

        def wanted(p: Persona) -> bool:
            if highlight is not None:
                return p.name.lower() == highlight.lower()  # names are unique ignoring case
            return p.prompt == self.current_prompt

        listing.highlighted = next((i for i, p in enumerate(self.personas, 1) if wanted(p)), 0)  # 0: no persona

    def highlighted_persona(self) -> Persona | None:
        index = self.query_one("#personas", OptionList).highlighted
        return self.personas[index - 1] if index else None  # index 0 is "no persona"

    def _draft(self) -> str:
        """The conversation's prompt if no persona holds it yet: `n` then saves it under a name."""
        if self.current_prompt and all(p.prompt != self.current_prompt for p in self.personas):
            return self.current_prompt
        return ""

    @on(OptionList.OptionSelected, "#personas")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.personas[event.option_index - 1].prompt if event.option_index else "")

    def _saved(self, persona: Persona | None) -> None:
        if persona is not None:
            self.refresh_personas(highlight=persona.name)

    def action_new(self) -> None:
        self.app.push_screen(PersonaForm(self.book, "", self._draft()), self._saved)

    def action_edit(self) -> None:
        persona = self.highlighted_persona()
        if persona is None:
            self.action_new()
            return
        self.app.push_screen(PersonaForm(self.book, persona.name, persona.prompt), self._saved)

    def action_delete(self) -> None:
        persona = self.highlighted_persona()
        if persona is None:
            self.app.notify("Highlight a persona to delete it.", severity="warning")
            return

        def done(yes: bool | None) -> None:
            if not yes:
                return
            try:
                self.book.delete_persona(persona.name)
            except StoreError as exc:
                self.app.notify(str(exc), severity="error")
            self.refresh_personas()

        # deleting a persona leaves the conversations that use its prompt as they are
        self.app.push_screen(ConfirmDialog(f"Delete persona “{persona.name}”? Conversations using its prompt "
                                           "keep it."), done)


# -- context --


def current_presets(presets: list[ContextPreset], n_ctx: int, planner_chose: bool = False) -> set[str]:
    """The keys of the presets in use: "auto" whenever the planner chose the size, even when it chose the native
    length (the setting is auto: another machine, or this one with more memory free, gets another size); else
    the fixed ones matching the loaded context (none for a size given with --ctx that is no preset)."""
    if planner_chose:
        return {p.key for p in presets if p.n_ctx is None}
    return {p.key for p in presets if p.n_ctx is not None and p.n_ctx == n_ctx}


def auto_detail(presets: list[ContextPreset], n_ctx: int) -> str:
    """What auto chose, for its line: "now 32,768 tokens, the native length"."""
    if not n_ctx:
        return ""
    native = next((p.n_ctx for p in presets if p.key == "native"), None)
    return f"now {n_ctx:,} tokens" + (", the native length" if n_ctx == native else "")


class ContextScreen(ModalScreen[str | None]):
    """Dismisses with the chosen preset's key, or None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]
    DEFAULT_CSS = """
    ContextScreen .context-dialog {
        width: 72; max-width: 100%; height: auto;
        padding: 1 2; border: round $primary; background: $surface;
    }
    ContextScreen .conversation-hint { width: 100%; color: $text-muted; margin-top: 1; }
    """

    def __init__(self, presets: list[ContextPreset], current_n_ctx: int, note: str,
                 planner_chose: bool = False) -> None:
        super().__init__()
        self.presets = presets
        self.current_n_ctx = current_n_ctx
        self.note = note
        self.current = current_presets(presets, current_n_ctx, planner_chose)

    def compose(self) -> ComposeResult:
        now = f" (now {self.current_n_ctx:,} tokens)" if self.current_n_ctx else ""
        with Vertical(classes="context-dialog"):  # wider than .dialog
            yield Label(Text("Context length" + now, style="bold"), markup=False)
            yield OptionList(*(Option(self._option(p), id=p.key) for p in self.presets), id="context-presets",
                             markup=False)
            if self.note:
                yield Label(printable(self.note), classes="conversation-hint", markup=False)
            yield Label("Enter switches · Esc cancels", classes="conversation-hint", markup=False)

    def _option(self, preset: ContextPreset) -> Text:
        in_use = preset.key in self.current
        detail = auto_detail(self.presets, self.current_n_ctx) if in_use and preset.n_ctx is None else ""
        return _entry(preset.label, detail, current=in_use)

    def on_mount(self) -> None:
        listing = self.query_one("#context-presets", OptionList)
        if self.presets:
            listing.highlighted = next((i for i, p in enumerate(self.presets) if p.key in self.current), 0)
        listing.focus()

    @on(OptionList.OptionSelected, "#context-presets")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.presets[event.option_index].key)
