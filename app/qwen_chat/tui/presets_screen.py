"""Edit the sampling preset of the current mode: Qwen's (with the user's edits) or a named one of the user's;
and turn speculative decoding off and on (settings.toml [engine] speculative, every answer from the next)."""

from __future__ import annotations

import dataclasses
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Switch

from qwen_chat.config import presets
from qwen_chat.config.engine_settings import save_speculative
from qwen_chat.qwen3 import sampling
from qwen_chat.qwen3.sampling import FIELDS, RANGES, THINKING_SLOTS, PresetValues
from qwen_chat.tui.printable import printable_line

QWEN = "qwen"  # the Select value for Qwen's preset; named ones are "named:NAME"
# the model family each of Qwen's presets is for, as the title names it
FAMILIES = {"hybrid-thinking": "Qwen3, thinking", "hybrid-non-thinking": "Qwen3, not thinking",
            "thinking-2507": "Qwen3 Thinking-2507", "instruct-2507": "Qwen3 Instruct-2507",
            "qwen35-thinking": "Qwen3.5 / 3.6, thinking", "qwen35-non-thinking": "Qwen3.5 / 3.6, not thinking"}


def preset_title(slot: str, model: str) -> str:
    """The title names the family the values are for; a model that is no Qwen3 (a Qwen2.5, a Llama) gets
    Instruct-2507's values and is said to, rather than called an Instruct-2507 itself."""
    family = FAMILIES.get(slot, slot)
    if slot == "instruct-2507" and "2507" not in model:
        family = f"{'a model that does not think' if model else 'no model loaded yet'} (Instruct-2507 values)"
    return f"Sampling preset: {family}"


class PresetsScreen(ModalScreen[bool]):
    """Dismisses with True when a preset was saved (the app then re-reads the presets); `drafting` is then the
    speculative decoding switch's value, which the app hands to the session."""

    BINDINGS = [Binding("escape", "close", "Close")]
    DEFAULT_CSS = """
    PresetsScreen .presets-dialog { width: 78; height: auto; max-height: 100%; padding: 0 1;
                                    border: round $primary; background: $surface; }
    PresetsScreen .row, PresetsScreen .field { height: auto; }
    PresetsScreen .row > Label { width: 38; }
    PresetsScreen .row > Input, PresetsScreen .row > Select { width: 1fr; }
    PresetsScreen .error { width: 100%; height: auto; color: $error; padding-left: 2; display: none; }
    PresetsScreen #presets-note, PresetsScreen #presets-model, PresetsScreen #drafting-help { color: $text-muted; }
    PresetsScreen .buttons { height: auto; margin-top: 1; }
    PresetsScreen .buttons Button { margin-right: 2; }
    PresetsScreen #drafting, PresetsScreen #drafting:focus { border: none; height: 1; padding: 0 1; }
    PresetsScreen #drafting-state { padding-left: 1; }
    PresetsScreen #drafting-help { width: 100%; height: auto; }
    """

    def __init__(self, slot: str, quantized: bool, model: str = "", drafting: bool = True) -> None:
        """`model`: the name of the model in use ("" when none is loaded yet); `drafting`: the session's
        speculative decoding switch."""
        super().__init__()
        if slot not in sampling.SLOTS:
            raise ValueError(f"no Qwen preset {slot!r}")
        self.slot = slot
        self.quantized = quantized
        self.model = model
        self.changed = False
        self.drafting = drafting
        self.fields = FIELDS if slot in THINKING_SLOTS else tuple(f for f in FIELDS if f != "thinking_budget")
        self._choice = self._current_choice()
        self._values = self._values_of(self._choice)

    # -- what is stored --

    def _current_choice(self) -> str:
        name = presets.in_use(self.slot)
        return QWEN if name is None else f"named:{name}"

    def _values_of(self, choice: str) -> PresetValues:
        if choice == QWEN:
            return presets.edited(self.slot, self.quantized)
        return presets.named(self.quantized)[choice.removeprefix("named:")]

    def _options(self) -> list[tuple[str, str]]:
        edited = presets.edited(self.slot, self.quantized) != sampling.qwen_preset(self.slot, self.quantized)
        qwen = f"Qwen's {self.slot}" + (" (with your edits)" if edited else "")
        return [(qwen, QWEN)] + [(name, f"named:{name}") for name in presets.named(self.quantized)]

    # -- layout --

    def compose(self) -> ComposeResult:
        kind = "quantized model" if self.quantized else "full-precision model"
        with VerticalScroll(classes="presets-dialog"):
            yield Label(Text(preset_title(self.slot, self.model), style="bold"), markup=False)
            yield Label(printable_line(f"{self.model} · {kind}" if self.model else kind.capitalize()),
                        id="presets-model", markup=False)
            with Horizontal(classes="row"):
                yield Label("Preset in use", markup=False)
                yield Select(self._options(), value=self._choice, allow_blank=False, id="preset-choice",
                             compact=True)
            for field in self.fields:
                with Vertical(classes="field"):
                    with Horizontal(classes="row"):
                        yield Label(f"{field} ({RANGES[field].describe()})", markup=False)
                        yield Input(self._text(field), id=f"field-{field}", compact=True,
                                    placeholder="random" if RANGES[field].optional else "")
                    yield Label("", id=f"error-{field}", classes="error", markup=False)
            with Horizontal(classes="row"):
                yield Label("Save as named preset", markup=False)
                yield Input(placeholder="optional: a new name", id="save-as",
                            compact=True)
            yield Label("", id="error-save-as", classes="error", markup=False)
            with Horizontal(classes="row"):
                yield Label("Speculative decoding", markup=False)
                yield Switch(self.drafting, id="drafting")
                yield Label(_on_off(self.drafting), id="drafting-state", markup=False)
            yield Label("Every answer from the next one, no reload; a draft model loads only if it was on at the "
                        "model's load.", id="drafting-help", markup=False)
            yield Label("Enter saves, Esc closes.", id="presets-note", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="primary", id="save", compact=True)
                yield Button("Reset to Qwen's", id="reset", compact=True)
                yield Button("Close", id="close", compact=True)

    def on_mount(self) -> None:
        self.query_one(f"#field-{self.fields[0]}", Input).focus()

    def _text(self, field: str) -> str:
        value = getattr(self._values, field)
        return "" if value is None else str(value)  # no seed: the field is empty (random)

    def _show(self, values: PresetValues) -> None:
        self._values = values
        for field in self.fields:
            self.query_one(f"#field-{field}", Input).value = self._text(field)
            self._error(field, None)

    def _error(self, field: str, message: str | None) -> None:
        label = self.query_one(f"#error-{field}", Label)
        label.update(message or "")
        label.display = bool(message)

    def _note(self, text: str) -> None:
        self.query_one("#presets-note", Label).update(text)

    # -- actions --

    @on(Select.Changed, "#preset-choice")
    def _chosen(self, event: Select.Changed) -> None:
        choice = str(event.value)
        if choice == self._choice:
            return
        try:
            presets.use(self.slot, None if choice == QWEN else choice.removeprefix("named:"))
        except (OSError, ValueError) as exc:
            self._note(f"Not changed: {exc}")
            return
        self._choice, self.changed = choice, True
        self._show(self._values_of(choice))
        label = dict((value, prompt) for prompt, value in self._options())[choice]
        self._note(f"{self.slot} now uses {label}.")

    @on(Input.Submitted)
    @on(Button.Pressed, "#save")
    def _save(self) -> None:
        values: dict[str, Any] = {}
        for field in self.fields:
            value, message = sampling.parse(field, self.query_one(f"#field-{field}", Input).value)
            self._error(field, message)
            if message is None:
                values[field] = value
        self._error("save-as", None)
        if len(values) < len(self.fields):
            self._note("Nothing was saved: the values in red are out of range.")
            return
        full = dataclasses.replace(self._values, **values)
        new_name = self.query_one("#save-as", Input).value.strip()
        try:
            if new_name:
                name = presets.save_named(new_name, full, base=self.slot, quantized=self.quantized)
                presets.use(self.slot, name)
            elif self._choice == QWEN:
                presets.save_override(self.slot, full, quantized=self.quantized)
            else:
                name = self._choice.removeprefix("named:")
                presets.save_named(name, full, base=presets.named_base(name), quantized=self.quantized)
        except ValueError as exc:  # a bad name
            self._error("save-as", str(exc))
            self._note("Nothing was saved.")
            return
        except OSError as exc:  # settings.toml unreadable or unwritable
            self._note(f"Nothing was saved: {exc}")
            return
        self.dismiss(True)

    @on(Switch.Changed, "#drafting")
    def _drafting(self, event: Switch.Changed) -> None:
        """Saved in settings.toml [engine] speculative; the value holds for this run even when it cannot be."""
        self.drafting = event.value
        state = _on_off(event.value)
        self.query_one("#drafting-state", Label).update(state)
        try:
            save_speculative(event.value)
        except OSError as exc:  # settings.toml unreadable or unwritable
            self._note(printable_line(f"Speculative decoding {state} for this run only: not saved: {exc}"))
            return
        self._note(f"Speculative decoding {state} from the next answer; saved in settings.toml.")

    @on(Button.Pressed, "#reset")
    def _reset(self) -> None:
        try:
            presets.reset(self.slot)
        except OSError as exc:
            self._note(f"Not reset: {exc}")
            return
        self.changed = True
        self._choice = QWEN
        select = self.query_one("#preset-choice", Select)
        select.set_options(self._options())
        select.value = QWEN
        self._show(sampling.qwen_preset(self.slot, self.quantized))
        self._note(f"Back to Qwen's {self.slot}.")

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(self.changed)


def _on_off(on: bool) -> str:
    return "on" if on else "off"
