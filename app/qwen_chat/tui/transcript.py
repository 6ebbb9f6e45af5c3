"""The transcript: the open conversation's messages, the answer being written (its tokens drawn in paced
batches, paced_tokens.py) and the tool calls in it (their approval prompts: tool_events.py).

It is told what happened (method calls from the chat panel, chat_panel.py) and reads the history from the open
conversation (session/conversation.py), never from SQLite.
"""

from __future__ import annotations

from textual.app import ScreenStackError
from textual.containers import VerticalScroll
from textual.widget import Widget

from qwen_chat.engines.protocol import Token
from qwen_chat.session.chat import ChatSession
from qwen_chat.session.conversation import OpenConversation
from qwen_chat.session.events import ContextTrimmed
from qwen_chat.store.records import Conversation, Message
from qwen_chat.tui import gc_pause
from qwen_chat.tui.messages import AssistantMessage, EarlierMessages, NoticeLine, TrimMarker, UserMessage
from qwen_chat.tui.paced_tokens import TokenPacer
from qwen_chat.tui.session_events import Inbox
from qwen_chat.tui.status_bar import StatusBar
from qwen_chat.tui.tool_calls_view import ToolCallView

RECENT = 60  # messages drawn when a conversation opens; the older ones wait behind EarlierMessages


def transcript_widgets(conversation: Conversation, messages: list[Message], versions: dict[int, int], n_ctx: int,
                       everything: bool = False) -> list[Widget]:
    """Its system prompt (the model reads it first: show what it is), its last RECENT messages (all of them with
    `everything`) with their version counts, and where the context starts when the last answer could not see the
    oldest turns."""
    widgets: list[Widget] = []
    if conversation.system_prompt:
        first = conversation.system_prompt.strip().splitlines()[0]
        widgets.append(NoticeLine(f"System prompt (F6): {first[:100]}{'…' if len(first) > 100 else ''}"))
    trimmed = next((m for m in reversed(messages) if m.role == "assistant" and m.context_from_id), None)
    hidden = 0 if everything else max(0, len(messages) - RECENT)
    if hidden:
        widgets.append(EarlierMessages(hidden))
    for message in messages[hidden:]:
        if trimmed is not None and message.id == trimmed.context_from_id:
            widgets.append(TrimMarker(sum(1 for m in messages if m.role == "user" and m.id < message.id), n_ctx))
        if message.role == "user":
            widgets.append(UserMessage(message.content, message.id, versions.get(message.id, 1), message.attachments))
        elif message.role == "assistant":
            widgets.append(AssistantMessage(message, versions.get(message.id, 1)))
    return widgets


class Transcript(VerticalScroll):
    """The messages of the open conversation; `live` is the answer being written, if any."""

    def __init__(self, session: ChatSession, conversation: OpenConversation, inbox: Inbox,
                 status: StatusBar) -> None:
        super().__init__(id="transcript")
        self.session = session
        self.conversation = conversation
        self.status = status
        self.live: AssistantMessage | None = None
        self.pacer = TokenPacer(self, inbox, status)

    def shown(self) -> bool:
        """Whether the chat is the screen shown (a panel may cover it; the app may be closing)."""
        try:
            return bool(self.app.query("#transcript"))
        except ScreenStackError:
            return False

    def show_conversation(self, everything: bool = False) -> None:
        """Draw the open conversation again from its kept history."""
        self.remove_children()
        self.live = None
        open_ = self.conversation
        if open_.current is not None:
            self.mount_all(transcript_widgets(open_.current, open_.messages, open_.versions, self.session.model.n_ctx,
                                              everything))
            if not everything:
                self.scroll_end(animate=False)

    async def draw(self, tokens: list[Token]) -> None:
        await self.pacer.draw(tokens)

    def selected_message(self, focused: Widget | None, role: str | None = None) -> Widget | None:
        """The focused message in the transcript, else the last one (of `role` if given)."""
        if isinstance(focused, UserMessage | AssistantMessage) and (
                role is None or isinstance(focused, UserMessage) == (role == "user")):
            return focused
        kinds = {"user": UserMessage, "assistant": AssistantMessage}.get(role or "", UserMessage | AssistantMessage)
        found = [w for w in self.children if isinstance(w, kinds)]
        return found[-1] if found else None

    def scroll_to_message(self, message_id: int) -> None:
        for widget in self.children:
            if getattr(widget, "message_id", None) == message_id:
                self.scroll_to_widget(widget, animate=False, top=True)
                widget.add_class("found")
                return

    def call_view(self, call_id: int) -> ToolCallView | None:
        """A call drawn in the chat, also while a panel (F9, F3…) covers it."""
        return next((v for v in self.query(ToolCallView) if v.call.id == call_id), None)

    # -- what the session did, drawn (the chat panel calls these while the chat is shown) --

    async def model_failed(self, message: str) -> None:
        await self.mount(NoticeLine(f"The model could not be loaded: {message}", error=True))

    async def user_saved(self, saved: Message, versions: int) -> None:
        await self.mount(UserMessage(saved.content, saved.id, versions, saved.attachments))
        self.scroll_end(animate=False)  # sending means the user wants to follow the answer

    async def rewound(self, from_message_id: int) -> None:
        # the replaced turns leave the transcript (the store keeps them: F8 shows them)
        children = list(self.children)
        first = next((i for i, w in enumerate(children)
                      if getattr(w, "message_id", 0) >= from_message_id), len(children))
        await self.remove_children(children[first:])

    async def context_trimmed(self, event: ContextTrimmed) -> None:
        for old in self.query(TrimMarker):
            await old.remove()
        before = next((w for w in self.children if getattr(w, "message_id", 0) == event.from_message_id), None)
        await self.mount(TrimMarker(event.dropped_turns, event.n_ctx), before=before)

    async def answer_began(self, answer: Message) -> None:
        self.live = AssistantMessage()
        self.live.message_id = answer.id
        await self.mount(self.live)

    async def answer_finished(self, saved: Message, versions: int, shown: bool) -> None:
        if shown and self.live is not None and self.live.message_id == saved.id:
            # the final Markdown re-render changes heights for a moment: keep a following view at the end
            following = self.scroll_y >= self.max_scroll_y - 1
            self.live.versions = versions  # 2 or more if regenerated
            await self.live.finish(saved)
            if following:
                self.scroll_end(animate=False)
        self.live = None

    async def notice(self, text: str, error: bool) -> None:
        await self.mount(NoticeLine(text, error))

    def collect_when_idle(self) -> None:
        if self.live is None:
            gc_pause.release()
