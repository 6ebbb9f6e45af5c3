"""Widgets for one chat message. Model text is always shown as text or Markdown, never as Rich markup."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Collapsible, Markdown, Static
from textual.widgets._markdown import MarkdownStream

from ..store import Message

# C0 controls (but newline and tab), DEL and C1 controls would reach the terminal raw (ESC starts a
# sequence, SO switches the character set): show them as Unicode control pictures instead.
_CONTROLS = {c: 0x2400 + c for c in range(0x20) if c not in (0x09, 0x0A)}
_CONTROLS[0x7F] = 0x2421
_CONTROLS.update({c: 0xFFFD for c in range(0x80, 0xA0)})


def printable(text: str) -> str:
    return text.translate(_CONTROLS)

_STATUS_LABEL = {
    "stopped": "stopped",
    "interrupted": "interrupted: qwen-chat ended while this answer was being written",
    "failed": "failed",
    "streaming": "writing…",
}


class UserMessage(Static):
    can_focus = True  # Tab or a click selects a message for Ctrl+E (edit), Ctrl+Y (copy), F8 (versions)

    def __init__(self, text: str, message_id: int = 0, versions: int = 1) -> None:
        super().__init__(classes="user-message", markup=False)
        self.message_id = message_id
        self.text = text
        self.versions = versions

    def render(self) -> Text:
        text = Text(printable(self.text))
        if self.versions > 1:
            text.append(f"\nedited · version {self.versions} of {self.versions} (F8 shows the earlier ones)",
                        style="dim italic")
        return text


class TrimMarker(Static):
    """Where the model's view of the conversation begins when the oldest turns no longer fit."""

    def __init__(self, dropped_turns: int, n_ctx: int) -> None:
        turns = "turn" if dropped_turns == 1 else "turns"
        super().__init__(Text(
            f"⋯ context full ({n_ctx:,} tokens): the model no longer sees the messages above this line "
            f"({dropped_turns} more {turns} left out for this answer). They stay saved and searchable here."),
            classes="notice trim-marker", markup=False)


class NoticeLine(Static):
    def __init__(self, text: str, error: bool = False) -> None:
        super().__init__(Text(printable(text)), classes="notice error" if error else "notice", markup=False)


class AssistantMessage(Vertical):
    """Thinking (collapsible, dimmed) above the answer (Markdown), then a line of status and speed."""

    can_focus = True

    def __init__(self, message: Message | None = None, versions: int = 1) -> None:
        super().__init__(classes="assistant-message")
        self.versions = versions
        self.message_id = message.id if message else 0
        self.thinking_text = message.thinking if message else ""
        self.answer_text = message.content if message else ""
        self._stored = message
        self._stream: MarkdownStream | None = None
        self._answer_started = bool(self.answer_text)

    def compose(self) -> ComposeResult:
        collapsed = bool(self.answer_text) or (self._stored is not None and self._stored.status != "streaming")
        with Collapsible(title="Thinking", collapsed=collapsed, classes="thinking") as box:
            box.display = bool(self.thinking_text)
            yield Static(Text(printable(self.thinking_text)), classes="thinking-text", markup=False)
        yield Markdown(printable(self.answer_text), classes="answer")
        yield Static("", classes="meta", markup=False)

    def on_mount(self) -> None:
        if self._stored is not None:
            self.show_final(self._stored)

    @property
    def _thinking_box(self) -> Collapsible:
        return self.query_one(".thinking", Collapsible)

    def add_thinking(self, text: str) -> None:
        self.thinking_text += text
        box = self._thinking_box
        box.display = True
        box.title = "Thinking…"
        self.query_one(".thinking-text", Static).update(Text(printable(self.thinking_text)))

    async def add_answer(self, text: str) -> None:
        if not self._answer_started:
            self._answer_started = True
            self._thinking_box.collapsed = True  # the answer is what the user reads now
            self._thinking_box.title = "Thinking"
        self.answer_text += text
        if self._stream is None:
            self._stream = Markdown.get_stream(self.query_one(".answer", Markdown))
        await self._stream.write(printable(text))

    async def finish(self, message: Message) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        self.thinking_text, self.answer_text = message.thinking, message.content
        self.query_one(".thinking-text", Static).update(_thinking_text(message))
        # a full update after the stream resets the parser state (and any half-parsed fence)
        await self.query_one(".answer", Markdown).update(printable(self.answer_text))
        self.show_final(message)

    def show_final(self, message: Message) -> None:
        box = self._thinking_box
        box.display = bool(message.thinking)
        cut = message.thinking and not message.thinking_closed and message.status != "streaming"
        if message.thinking_cut_at is not None:
            box.title = f"Thinking (cut by the {message.thinking_budget:,}-token budget)"
            self.query_one(".thinking-text", Static).update(_thinking_text(message))
        else:
            box.title = "Thinking (cut off)" if cut else "Thinking"
        parts = []
        if self.versions > 1:
            parts.append(f"version {self.versions} of {self.versions} (F8 shows the earlier ones)")
        if message.status in _STATUS_LABEL:
            parts.append(_STATUS_LABEL[message.status])
        if message.error:
            parts.append(message.error)
        if message.tokens_per_second:
            parts.append(f"{message.completion_tokens:,} tokens · {message.tokens_per_second:.1f} tok/s")
        meta = self.query_one(".meta", Static)
        meta.update(Text(" · ".join(parts)))
        meta.set_class(message.status in ("stopped", "interrupted", "failed"), "warn")


def _thinking_text(message: Message) -> Text:
    """Thinking as stored; where a budget cut it, the inserted stop-thinking instruction is marked."""
    cut = message.thinking_cut_at
    if cut is None:
        return Text(printable(message.thinking))
    text = Text(printable(message.thinking[:cut]))
    text.append(f"\n✂ budget of {message.thinking_budget:,} thinking tokens reached; qwen-chat inserted:",
                style="bold")
    text.append(printable(message.thinking[cut:]), style="reverse")
    return text
