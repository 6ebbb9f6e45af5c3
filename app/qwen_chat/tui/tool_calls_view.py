"""Tool calls in the transcript: each call an answer ended with (tool, server, arguments, state), the approval
prompt while one waits for the user, and its result in a collapsed block.

Everything a tool call holds came from the model or a tool server: it is drawn as text (Rich `Text` made
printable), never as Markdown or markup, and long arguments or results are cut for the screen (the store and the
model have their own limits).
"""

from __future__ import annotations

import json
import re

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import HorizontalGroup, VerticalGroup
from textual.message import Message
from textual.widgets import Button, Collapsible, Static

from qwen_chat.store.records import ToolCallRecord
from qwen_chat.tui.printable import printable, printable_line

SHOWN_LINES = 200  # of one result or one call's arguments drawn in the transcript
SHOWN_CHARS = 20_000

_STATE = {"pending": "waiting", "running": "running… (Esc cancels it)", "ok": "done", "error": "failed",
          "denied": "denied", "stopped": "stopped", "interrupted": "interrupted: qwen-chat ended during this call"}
_STATE_STYLE = {"ok": "green", "error": "red", "denied": "yellow", "stopped": "yellow", "interrupted": "yellow",
                "running": "cyan"}
_ANSWERED = {"once": "allowed once", "tool": "allowed (always, this tool)",
             "server": "allowed (always, this server)", "deny": "denied"}
# (decision, button label, key): the order of the buttons
DECISIONS = (("once", "Allow once", "a"), ("deny", "Deny", "d"), ("tool", "Always allow this tool", "t"),
             ("server", "Always allow this server", "s"))
_NAME = re.compile(r'"name"\s*:\s*"([^"\\]{1,80})"')


def shown_part(text: str) -> tuple[str, str]:
    """What the transcript draws of a long text (SHOWN_LINES lines, SHOWN_CHARS characters at most), and a note
    on what it leaves out ("" when nothing)."""
    lines = text.count("\n") + 1
    shown = "\n".join(text.split("\n", SHOWN_LINES)[:SHOWN_LINES])[:SHOWN_CHARS]
    if len(shown) == len(text):
        return text, ""
    return shown, (f"… not shown here: {len(text) - len(shown):,} more characters ({lines:,} lines in all; "
                   f"the first {SHOWN_LINES} lines or {SHOWN_CHARS:,} characters are drawn)")


def size_of(text: str) -> str:
    lines = text.count("\n") + 1 if text else 0
    return f"{len(text):,} characters, {lines:,} line{'' if lines == 1 else 's'}"


def _drawn(text: str, note: str = "", style: str = "") -> Text:
    drawn = Text(printable(text), style=style)
    if note:
        drawn.append(f"\n{note}", style="dim italic")
    return drawn


class ApprovalBar(VerticalGroup, can_focus=True):
    """Allow once / Deny / Always allow this tool / Always allow this server.

    A decision is never taken from keys meant for the composer: the bar does not take focus by itself (the user
    moves to it with Shift+Tab or a click, and it shows that it has focus), its buttons are not focusable (so no
    button is a default that Enter or Space presses), and a key that is not one of its four letters goes back to
    the composer with the focus, so nothing typed is lost."""

    DEFAULT_CSS = """
    ApprovalBar { height: auto; padding: 0 0 0 2; }
    ApprovalBar HorizontalGroup { height: auto; }
    ApprovalBar Button { margin: 0 1 0 0; }
    ApprovalBar .tool-approval-hint { color: $text-muted; }
    ApprovalBar:focus { background: $warning 15%; }
    ApprovalBar:focus .tool-approval-hint { color: $text; text-style: bold; }
    """
    BINDINGS = [Binding(key, f"decide('{decision}')", label, key_display=key) for decision, label, key in DECISIONS]
    KEYS = frozenset(key for _, _, key in DECISIONS)
    HINT = "Shift+Tab or a click answers here · Esc stops the answer (the call does not run)"
    FOCUSED_HINT = "a allows once · d denies · t / s always allow · any other key goes back to your message"

    class Chosen(Message):
        def __init__(self, decision: str) -> None:
            super().__init__()
            self.decision = decision

    class TypedAway(Message):
        """A key that answers nothing reached the bar: the user meant to type; the key goes to the composer."""

        def __init__(self, character: str) -> None:
            super().__init__()
            self.character = character

    def __init__(self) -> None:
        super().__init__()
        self._hint = Static(Text(self.HINT), classes="tool-approval-hint", markup=False)

    def compose(self) -> ComposeResult:
        for row in (DECISIONS[:2], DECISIONS[2:]):
            with HorizontalGroup():
                for decision, label, key in row:
                    button = Button(f"{label} ({key})", variant="error" if decision == "deny" else "primary"
                                    if decision == "once" else "default", name=decision, compact=True)
                    button.can_focus = False  # a click presses it; no key reaches it through focus
                    yield button
        yield self._hint

    def on_focus(self) -> None:
        self._hint.update(Text(self.FOCUSED_HINT))

    def on_blur(self) -> None:
        self._hint.update(Text(self.HINT))

    def on_key(self, event: events.Key) -> None:
        if event.key in self.KEYS:
            return  # the bindings answer
        if event.is_printable and event.character:
            event.stop()
            event.prevent_default()
            self.post_message(self.TypedAway(event.character))
        elif event.key == "enter":  # no default answer: Enter is what a message ends with
            event.stop()
            self.notify("Enter does not answer a tool call: a allows it once, d denies it.", severity="warning")

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_decide(event.button.name or "deny")

    def action_decide(self, decision: str) -> None:
        if self.display:
            self.post_message(self.Chosen(decision))


class ToolCallView(VerticalGroup):
    """One call: a head line (tool, server, state), its arguments as JSON, the approval prompt when it waits for
    the user, and its result (collapsed)."""

    DEFAULT_CSS = """
    ToolCallView { height: auto; margin: 0 0 1 1; padding: 0 1; border-left: thick $secondary; }
    ToolCallView .tool-args { color: $text-muted; padding: 0 0 0 2; }
    ToolCallView .tool-why { color: $text-muted; text-style: italic; padding: 0 0 0 2; }
    ToolCallView .tool-result { margin: 0; padding: 0; border: none; background: transparent; }
    ToolCallView .tool-result Contents { padding: 0 0 0 3; }
    ToolCallView.asking { border-left: thick $warning; }
    """

    class Decided(Message):
        """The user answered this call's approval prompt."""

        def __init__(self, view: ToolCallView, decision: str) -> None:
            super().__init__()
            self.view = view
            self.call_id = view.call.id
            self.decision = decision

    def __init__(self, call: ToolCallRecord) -> None:
        super().__init__(classes="tool-call")
        self.call = call
        self.server = call.server
        self.asking = False
        self._answered = ""
        # held, not queried: events may update them before their compose has run
        self._head = Static(self._head_text(), classes="tool-head", markup=False)
        self._args = Static(self._args_text(), classes="tool-args", markup=False)
        self._why = Static("", classes="tool-why", markup=False)
        self._why.display = False
        self._bar = ApprovalBar()
        self._bar.display = False
        self._body = Static("", classes="tool-result-text", markup=False)
        self._result = Collapsible(self._body, title="Result", collapsed=True, classes="tool-result")
        self._show_result()

    def compose(self) -> ComposeResult:
        yield self._head
        yield self._args
        yield self._why
        yield self._bar
        yield self._result

    def _head_text(self) -> Text:
        call = self.call
        text = Text("🔧 ")
        text.append(printable_line(call.name) or "(no name)", style="bold")
        if self.server:
            text.append(f" · {printable_line(self.server)}", style="dim")
        if self.asking:
            state, style = "waiting for your approval", "bold yellow"
        elif self._answered and not call.finished:
            state, style = self._answered, ""
        else:
            state, style = _STATE.get(call.status, call.status), _STATE_STYLE.get(call.status, "")
        text.append(f" · {state}", style=style)
        return text

    def _args_text(self) -> Text:
        call = self.call
        if not call.arguments and call.raw and call.status == "error":  # malformed: what the model wrote
            return _drawn(*shown_part(call.raw.strip()))
        pretty = json.dumps(call.arguments, indent=2, ensure_ascii=False)
        return _drawn(*shown_part(pretty))

    def _show_result(self) -> None:
        call = self.call
        box = self._result
        box.display = call.finished
        if not call.finished:
            return
        label = {"ok": "Result: ok", "error": "Result: error"}.get(call.status, call.status)
        cut = " · cut before it was stored" if call.truncated else ""
        box.title = f"{label} · {size_of(call.result)}{cut}"
        self._body.update(_drawn(*shown_part(call.result), style="red" if call.status == "error" else ""))

    def ask(self, server: str, description: str) -> None:
        """Show the approval prompt (the call waits for the user)."""
        self.server = server or self.server
        self.asking = True
        self.add_class("asking")
        first = description.strip().split("\n")[0] if description.strip() else ""
        self._why.update(Text(printable_line(first[:300]) + ("…" if len(first) > 300 else "")))
        self._why.display = bool(first)
        self._bar.display = True
        self._head.update(self._head_text())

    def stop_asking(self, answered: str = "") -> None:
        self.asking = False
        self._answered = answered or self._answered
        self.remove_class("asking")
        self._bar.display = False
        self._why.display = False
        self._head.update(self._head_text())

    def update_call(self, call: ToolCallRecord) -> None:
        """The call as stored now (approved, running, finished)."""
        self.call = call
        self.server = call.server or self.server
        if call.status != "pending":
            self.stop_asking()
        self._head.update(self._head_text())
        self._show_result()

    @on(ApprovalBar.Chosen)
    def _chosen(self, event: ApprovalBar.Chosen) -> None:
        event.stop()
        if self.asking:
            self.stop_asking(_ANSWERED.get(event.decision, event.decision))
            self.post_message(self.Decided(self, event.decision))


class ToolCalls(VerticalGroup):
    """The calls of one answer, and while it streams a line saying a call is being written."""

    DEFAULT_CSS = """
    ToolCalls { height: auto; }
    ToolCalls .tool-preparing { color: $text-muted; text-style: italic; padding: 0 1; }
    """

    def __init__(self, calls: tuple[ToolCallRecord, ...] = ()) -> None:
        self._preparing = Static("", classes="tool-preparing", markup=False)
        self._preparing.display = False
        super().__init__(self._preparing, *(ToolCallView(call) for call in calls), classes="tool-calls")

    def preparing(self, call_text: str) -> None:
        """The call text streamed so far (raw, tags included): one compact line, never the JSON itself."""
        count = call_text.count("<tool_call>")
        name = _NAME.search(call_text.rsplit("<tool_call>", 1)[-1])  # the first "name" of the last call
        what = f"a call to {printable_line(name.group(1))}" if name else "a tool call"
        if count > 1:
            what = f"tool call {count}" + (f" ({printable_line(name.group(1))})" if name else "")
        self._preparing.update(Text(f"🔧 preparing {what}… ({len(call_text):,} characters so far)"))
        self._preparing.display = True

    async def show(self, calls: tuple[ToolCallRecord, ...]) -> None:
        """The calls as saved with the answer."""
        self._preparing.display = False
        await self.remove_children(ToolCallView)
        if calls:
            await self.mount_all([ToolCallView(call) for call in calls])

    def view(self, call_id: int) -> ToolCallView | None:
        return next((v for v in self.query(ToolCallView) if v.call.id == call_id), None)
