"""Widgets for one chat message. Model text is always shown as text or Markdown, never as Rich markup."""

from __future__ import annotations

import logging

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.message import Message as TextualMessage
from textual.widgets import Static

from qwen_chat.qwen3.thinking import Part, StreamText
from qwen_chat.store.records import Attachment, Message
from qwen_chat.tui.printable import printable, printable_line
from qwen_chat.tui.streaming_markdown import StreamingMarkdown
from qwen_chat.tui.thinking_title import ThinkingTitle
from qwen_chat.tui.tool_calls_view import ToolCalls

_STATUS_LABEL = {
    "stopped": "stopped",
    "interrupted": "interrupted: qwen-chat ended while this answer was being written",
    "failed": "failed",
    "streaming": "writing…",
}


def file_chips(files: tuple[Attachment, ...] | list[Attachment]) -> str:
    """The attached files as the composer and the transcript show them: name and size."""
    return "   ".join(f"📎 {printable_line(f.name)} · about {f.tokens:,} tokens" for f in files)


log = logging.getLogger(__name__)


class UserMessage(Static):
    can_focus = True  # Tab or a click selects a message for Ctrl+E (edit), Ctrl+Y (copy), F8 (versions)

    def __init__(self, text: str, message_id: int = 0, versions: int = 1,
                 files: tuple[Attachment, ...] = ()) -> None:
        super().__init__(classes="user-message", markup=False)
        self.message_id = message_id
        self.text = text
        self.versions = versions
        self.files = files

    def render(self) -> Text:
        text = Text(printable(drawn_part(self.text)))
        if self.files:
            text.append(("\n" if self.text else "") + file_chips(self.files), style="dim")
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


MAX_DRAWN_CHARS = 100_000  # of one stored message: beyond, opening the chat would take seconds (the rest is kept)


def drawn_part(text: str) -> str:
    """What the transcript draws of a stored message: all of it, or its start with a note saying what is not."""
    if len(text) <= MAX_DRAWN_CHARS:
        return text
    return (text[:MAX_DRAWN_CHARS] + f"\n\n… {len(text) - MAX_DRAWN_CHARS:,} more characters are not drawn "
            "(Ctrl+Y copies the whole message; `qwen-chat export` writes it)")


class EarlierMessages(Static):
    """Stands for the older messages of a long conversation, which are not drawn when it opens."""

    can_focus = True

    class Show(TextualMessage):
        pass

    def __init__(self, count: int) -> None:
        super().__init__(Text(f"▲ {count:,} earlier messages: press Enter here or click to show them"),
                         classes="notice earlier", markup=False)

    def on_click(self) -> None:
        self.post_message(self.Show())

    def key_enter(self) -> None:
        self.post_message(self.Show())


class NoticeLine(Static):
    def __init__(self, text: str, error: bool = False) -> None:
        super().__init__(Text(printable(text)), classes="notice error" if error else "notice", markup=False)


class AssistantMessage(Vertical):
    """Thinking (collapsed; drawn only while open) above the answer (streamed Markdown), the tool calls it ended
    with (tui/tool_calls_view.py), then status and speed.

    While streaming, the text is the engine's own copy (`follow`): the widget keeps none of its own.
    """

    can_focus = True

    def __init__(self, message: Message | None = None, versions: int = 1) -> None:
        super().__init__(classes="assistant-message")
        self.versions = versions
        self.message_id = message.id if message else 0
        self._stored = message
        self._text = StreamText()
        self._own_text = True  # False once following the engine's copy of the text
        if message is not None:
            self._text.append(Part.THINKING, message.thinking)
            self._text.append(Part.ANSWER, message.content)
        self._shown_thinking = 0  # characters of thinking given to the thinking widget so far
        self._showing = False
        self._show_again = False
        self._answer_started = bool(message and message.content)
        self.thinking_tokens = 0
        # held, not queried: seen as NoMatches when a stored conversation opened on a busy machine and the
        # children mounted after this widget's on_mount
        self._cut = Static("", classes="thinking-cut", markup=False)
        self._cut.display = False
        self._has_cut = False  # the marker is shown while the thinking is open
        self._meta = Static("", classes="meta", markup=False)
        self.tool_calls = ToolCalls(message.tool_calls if message else ())

    @property
    def thinking_text(self) -> str:
        return self._text.thinking

    @property
    def answer_text(self) -> str:
        return self._text.answer

    def follow(self, stream: StreamText) -> None:
        """Read the answer from the engine's own text from now on (nothing is copied)."""
        if self._own_text and stream is not self._text and not self._text.length(Part.ANSWER) \
                and not self._text.length(Part.THINKING):
            self._text, self._own_text = stream, False

    def compose(self) -> ComposeResult:
        title = ThinkingTitle()
        title.display = bool(self._text.length(Part.THINKING))
        yield title
        thinking = StreamingMarkdown(classes="thinking-text")  # filled when it is opened
        thinking.display = False
        yield thinking
        yield self._cut
        yield StreamingMarkdown(drawn_part(self._text.answer), classes="answer")
        yield self.tool_calls
        yield self._meta

    def on_mount(self) -> None:
        if self._stored is None:
            return
        try:
            self.show_final(self._stored)
        except NoMatches:
            # removed before its children mounted (the transcript was redrawn at once: Ctrl+N right after the
            # start); there is nothing left to show, and a crash here would take the whole app down
            log.debug("message %s removed while mounting", self.message_id)

    @property
    def _thinking_box(self) -> ThinkingTitle:
        return self.query_one(ThinkingTitle)

    @on(ThinkingTitle.Changed)
    async def _thinking_toggled(self, event: ThinkingTitle.Changed) -> None:
        event.stop()
        self.query_one(".thinking-text", StreamingMarkdown).display = not event.collapsed
        self._cut.display = self._has_cut and not event.collapsed
        if not event.collapsed:
            await self._show_thinking()

    def add_thinking(self, text: str) -> None:
        if self._own_text:
            self._text.append(Part.THINKING, text)
        box = self._thinking_box
        box.display = True
        box.title = f"Thinking… {self.thinking_tokens:,} tokens" if self.thinking_tokens else "Thinking…"
        if not box.collapsed:
            self.call_later(self._show_thinking)

    async def _show_thinking(self) -> None:
        """Give the thinking widget what it has not shown yet (up to a budget's cut)."""
        if self._showing:
            self._show_again = True  # one run at a time; the running one goes round again
            return
        self._showing = True
        try:
            widget = self.query_one(".thinking-text", StreamingMarkdown)
            while True:
                self._show_again = False
                thinking = self._text.thinking
                cut = self._stored.thinking_cut_at if self._stored is not None else None
                end = len(thinking) if cut is None else cut
                new, self._shown_thinking = thinking[self._shown_thinking:end], max(self._shown_thinking, end)
                await widget.append(new)
                if not self._show_again:
                    break
            if self._stored is not None and self._stored.status != "streaming":
                await widget.finish()
        finally:
            self._showing = False

    async def add_answer(self, text: str) -> None:
        if self._own_text:
            self._text.append(Part.ANSWER, text)
        if not self._answer_started:
            self._answer_started = True
            self._thinking_box.title = "Thinking"
        await self.query_one(".answer", StreamingMarkdown).append(text)

    def add_tool_call(self, text: str) -> None:
        """Raw call text streamed (tags and JSON): the calls show a compact line instead."""
        if self._own_text:
            self._text.append(Part.TOOL_CALL, text)
        self.tool_calls.preparing(self._text.tool_call_text)

    async def finish(self, message: Message) -> None:
        answer = self.query_one(".answer", StreamingMarkdown)
        streamed = self._text.length(Part.ANSWER)
        self._stored = message
        self._text, self._own_text = StreamText(), True
        self._text.append(Part.THINKING, message.thinking)
        self._text.append(Part.ANSWER, message.content)
        if streamed != len(message.content):  # not what was streamed (a server's cleanup): draw it anew
            await answer.remove()
            await self.mount(StreamingMarkdown(message.content, classes="answer"), before=self.tool_calls)
        else:
            await answer.finish()
        await self.tool_calls.show(message.tool_calls)
        if message.thinking_cut_at is not None and self._shown_thinking > message.thinking_cut_at:
            old = self.query_one(".thinking-text", StreamingMarkdown)
            await old.remove()  # drawn past the cut while streaming: redraw up to it, the marker shows the rest
            redrawn = StreamingMarkdown(classes="thinking-text")
            redrawn.display = not self._thinking_box.collapsed
            await self.mount(redrawn, before=self._cut)
            self._shown_thinking = 0
        if not self._thinking_box.collapsed:
            await self._show_thinking()
        self.show_final(message)

    def show_final(self, message: Message) -> None:
        box = self._thinking_box
        box.display = bool(message.thinking)
        cut = message.thinking and not message.thinking_closed and message.status != "streaming"
        marker = self._cut
        if message.thinking_cut_at is not None:
            box.title = f"Thinking (cut by the {message.thinking_budget:,}-token budget)"
            marker.update(_cut_marker(message))
            self._has_cut = True
            marker.display = not box.collapsed
        else:
            box.title = "Thinking (cut off)" if cut else "Thinking"
        parts = []
        if self.versions > 1:
            parts.append(f"version {self.versions} of {self.versions} (F8 shows the earlier ones)")
        if message.status in _STATUS_LABEL:
            parts.append(_STATUS_LABEL[message.status])
        if message.error:
            parts.append(message.error)
        empty = message.status == "complete" and not message.content.strip() and not message.tool_calls
        if empty:  # say so: a blank space under the question reads as a hang
            parts.append("the model ended its answer without any text" +
                         (" (it only thought: open the thinking above)" if message.thinking.strip() else ""))
        if message.tokens_per_second:
            parts.append(f"{message.completion_tokens:,} tokens · {message.tokens_per_second:.1f} tok/s")
        meta = self._meta
        meta.update(Text(" · ".join(parts)))
        meta.set_class(empty or message.status in ("stopped", "interrupted", "failed"), "warn")


def _cut_marker(message: Message) -> Text:
    """Where a budget cut the thinking: the marker, then the stop-thinking instruction qwen-chat inserted."""
    cut = message.thinking_cut_at or 0
    text = Text(f"✂ budget of {message.thinking_budget:,} thinking tokens reached; qwen-chat inserted:",
                style="bold")
    text.append(printable(message.thinking[cut:]), style="reverse")
    return text
