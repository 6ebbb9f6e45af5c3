"""The chat panel: the transcript above the composer panel, showing the open conversation. The app calls down
into it (open a conversation, a session event happened); the tool calls' prompts and the composer report up
with messages, which it answers by calling down into its two parts.
"""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical

from qwen_chat.qwen3.context_presets import context_presets
from qwen_chat.session.chat import ChatSession
from qwen_chat.session.conversation import OpenConversation
from qwen_chat.store.records import Conversation, StoreError
from qwen_chat.tui.conversation_screens import (
    ContextScreen,
    CopyScreen,
    PersonasScreen,
    VersionsScreen,
    copy_choices,
    copy_text,
)
from qwen_chat.tui.messages import AssistantMessage, EarlierMessages, UserMessage
from qwen_chat.tui.sending import ELSEWHERE, ComposerPanel, refused_elsewhere, refused_while_busy
from qwen_chat.tui.session_events import (
    AnswerBegan,
    AnswerFinished,
    ContextWasTrimmed,
    Inbox,
    NoticeArrived,
    SessionMessage,
    ToolApprovalAsked,
    ToolCallUpdated,
    ToolLoopFinished,
    TranscriptRewound,
    UserMessageSaved,
)
from qwen_chat.tui.status_bar import StatusBar
from qwen_chat.tui.tool_calls_view import ApprovalBar, ToolCallView
from qwen_chat.tui.tool_events import ToolEvents
from qwen_chat.tui.transcript import Transcript

IDLE_COLLECT_AFTER = 1.0  # seconds after an answer: the garbage collections held while it streamed (gc_pause.py)
TRIMMED = ("The conversation is longer than the context: the oldest turns are not sent for this answer (marked in "
           "the transcript; they stay saved).")


class ChatPanel(Vertical):
    def __init__(self, session: ChatSession, conversation: OpenConversation, inbox: Inbox, status: StatusBar) -> None:
        super().__init__(id="chat")
        self.session = session
        self.conversation = conversation
        self.status = status
        self.transcript = Transcript(session, conversation, inbox, status)
        self.composer_panel = ComposerPanel(session, conversation)
        self.tools = ToolEvents(session, self.transcript, self.composer_panel.composer, status)

    def compose(self) -> ComposeResult:
        yield self.transcript
        yield self.composer_panel

    def open(self, conversation: Conversation | None) -> None:
        """Show a conversation (a new one for None); the draft being typed stays with the one it was typed in."""
        before = self.conversation.current
        self._opened(before, self.conversation.open(conversation))

    def open_id(self, conversation_id: int) -> None:
        """`open` by id; raises StoreError when it no longer exists (then nothing changes)."""
        before = self.conversation.current
        self._opened(before, self.conversation.open_id(conversation_id))

    def _opened(self, before: Conversation | None, claimed: bool) -> None:
        if not claimed:
            self.notify(ELSEWHERE, severity="warning", timeout=8)
        current = self.conversation.current
        if before is not None and current is not None and before.id != current.id:
            self.composer_panel.switch_draft(before.id, current.id)
        self.composer_panel.show_history()
        self.transcript.show_conversation()

    def follow_elsewhere(self) -> None:
        """Another window committed to this conversation (it answers there): its history is read again."""
        self.conversation.reload()
        self.composer_panel.show_history()
        self.transcript.show_conversation()

    async def session_event(self, message: SessionMessage, shown: bool) -> None:
        """One of the session's events about the conversation: kept by the open conversation, drawn by the
        transcript while the chat is shown (`shown`)."""
        open_, transcript = self.conversation, self.transcript
        if isinstance(message, UserMessageSaved):
            saved = message.event.message
            versions = open_.user_saved(saved)
            if shown and open_.is_open(saved.conversation_id):
                self.composer_panel.show_history()
                await transcript.user_saved(saved, versions)
        elif isinstance(message, TranscriptRewound):
            rewound = message.event
            open_.rewound(rewound.conversation_id, rewound.from_message_id)
            if shown and open_.is_open(rewound.conversation_id):
                await transcript.rewound(rewound.from_message_id)
        elif isinstance(message, ContextWasTrimmed):
            if shown and open_.is_open(message.event.conversation_id):
                await transcript.context_trimmed(message.event)
            self.notify(TRIMMED, severity="warning", timeout=8)
        elif isinstance(message, AnswerBegan):
            await self._answer_began(message, shown)
        elif isinstance(message, AnswerFinished):
            await self._answer_finished(message, shown)
        elif isinstance(message, NoticeArrived):
            if shown:
                await transcript.notice(message.event.text, message.event.error)
            open_.refresh_record()
        elif isinstance(message, ToolApprovalAsked):
            self.tools.approval_asked(message.event, open_.is_open(message.event.conversation_id), shown)
        elif isinstance(message, ToolCallUpdated):
            self.tools.call_updated(message.event.call)
        elif isinstance(message, ToolLoopFinished):
            self.tools.loop_finished()

    async def _answer_began(self, message: AnswerBegan, shown: bool) -> None:
        answer = message.event.message
        self.status.thinking_tokens, self.status.budget = 0, answer.thinking_budget
        self.conversation.answer_started(answer)
        if shown and self.conversation.is_open(answer.conversation_id):
            await self.transcript.answer_began(answer)
        self.status.state = "generating"

    async def _answer_finished(self, message: AnswerFinished, shown: bool) -> None:
        saved = message.event.message
        versions = self.conversation.answer_saved(saved)
        await self.transcript.answer_finished(saved, versions, shown)
        self.status.state = "tool calls" if saved.tool_calls and self.session.generating else "ready"
        self.transcript.set_timer(IDLE_COLLECT_AFTER, self.transcript.collect_when_idle)
        if message.event.done is not None:
            self.status.last_speed = message.event.done.tokens_per_second
            drafting = message.event.done.drafting
            self.status.last_drafting = drafting.short() if drafting is not None else ""

    # -- the keys' actions on the chat (the app's bindings call these) --

    def regenerate(self) -> None:
        current = self.conversation.current
        if current is None or refused_while_busy(self.session, self.notify) \
                or refused_elsewhere(self.conversation, self.notify):
            return
        self.composer_panel.start_turn(lambda: self.session.regenerate(current.id))

    def edit_message(self) -> None:
        if refused_while_busy(self.session, self.notify) or refused_elsewhere(self.conversation, self.notify):
            return
        message = self.transcript.selected_message(self.app.focused, "user")
        if not isinstance(message, UserMessage) or not message.message_id:
            self.notify("There is no message of yours to edit yet.", severity="warning")
            return
        self.composer_panel.edit(message.message_id, message.text)

    def toggle_thinking(self) -> None:
        if self.conversation.current is not None:
            on = not self.conversation.thinking_now()
            self.composer_panel.send(self.conversation.current.id, "/think" if on else "/no_think")

    def presets(self) -> None:
        from qwen_chat.qwen3.sampling import preset_name
        from qwen_chat.tui.presets_screen import PresetsScreen

        if self.conversation.current is None:
            return
        slot = preset_name(self.session.model.variant, self.conversation.thinking_now())
        model = self.session.model
        name = model.model_name if model.info is not None or model.remote_model else ""  # "": not loaded yet
        screen = PresetsScreen(slot, model.quantized, name, self.session.drafting)

        def done(changed: bool | None) -> None:
            self.session.drafting = screen.drafting  # the switch's value, saved in settings.toml or for this run
            if changed:
                self.notify("Preset saved: it applies from the next answer.", timeout=4)

        self.app.push_screen(screen, done)

    def tools_panel(self) -> None:
        """F9, /tools: the servers and their tools, on or off for this conversation, and the standing rules;
        mcp.json is read again as it opens (tools_screen.py)."""
        from qwen_chat.tui.tools_screen import ToolsScreen

        current = self.conversation.current
        if current is None or isinstance(self.app.screen, ToolsScreen):
            return
        conversation_id = current.id

        def closed(_: None) -> None:
            if self.conversation.is_open(conversation_id):
                self.conversation.refresh_record()

        self.app.push_screen(ToolsScreen(self.session.tools, self.conversation, conversation_id), closed)

    def copy_message(self) -> None:
        focused = self.app.focused
        widget = self.transcript.selected_message(focused, "assistant") \
            if not isinstance(focused, UserMessage) else focused
        if widget is None:
            self.notify("There is no message to copy yet.", severity="warning")
            return
        text = widget.answer_text if isinstance(widget, AssistantMessage) else getattr(widget, "text", "")
        if len(copy_choices(text)) == 1:  # no code blocks: nothing to choose
            copy_text(self.app, text)
            return
        self.app.push_screen(CopyScreen(text, "Copy"), lambda chosen: copy_text(self.app, chosen) if chosen else None)

    def versions(self) -> None:
        message_id: int = getattr(self.transcript.selected_message(self.app.focused), "message_id", 0)
        if self.conversation.current is None or not message_id:
            return
        if not isinstance(self.app.focused, UserMessage | AssistantMessage):
            # nothing selected: the newest message that has earlier versions
            message_id = self.conversation.newest_versioned() or message_id
        try:
            versions, current = self.conversation.earlier_versions(message_id)
        except StoreError as exc:
            self.notify(str(exc), severity="error")
            return
        if not versions:
            self.notify("This message has no earlier versions (Ctrl+E edits a message, Ctrl+R regenerates).")
            return
        self.app.push_screen(VersionsScreen(versions, current))

    def personas(self) -> None:
        if self.conversation.current is None:
            return
        conversation_id = self.conversation.current.id

        def chosen(prompt: str | None) -> None:
            if prompt is None:
                return
            try:
                self.conversation.set_persona(conversation_id, prompt)
            except StoreError as exc:
                self.notify(str(exc), severity="error")
                return
            self.notify("System prompt set for this conversation; it applies from the next message." if prompt
                        else "This conversation has no system prompt now.")
            if not self.session.generating:
                self.transcript.show_conversation()

        self.app.push_screen(PersonasScreen(self.conversation, self.conversation.current.system_prompt), chosen)

    def context(self) -> None:
        model = self.session.model
        if model.info is None:
            self.notify("An endpoint's server sets its context; a local model's can be changed here.")
            return
        presets = context_presets(model.info, model.variant)
        note = "Changing the context re-plans memory and reloads the model; the conversation stays."

        def chosen(key: str | None) -> None:
            if key is not None:
                self._change_context(key)

        self.app.push_screen(ContextScreen(presets, model.n_ctx, note, model.planner_chose_context), chosen)

    @work(thread=True, group="load", exit_on_error=False)
    def _change_context(self, key: str) -> None:
        try:
            chosen = self.session.change_context(key)  # hardware detection and planning: off the UI thread
        except Exception as exc:  # StoreError, ValueError, DoesNotFit: each says why
            self.app.call_from_thread(self.notify, str(exc), severity="error", timeout=10)
            return
        self.status.state = "loading"
        yarn = f" with YaRN ×{chosen.yarn_factor}" if chosen.yarn_factor else ""
        self.app.call_from_thread(self.notify, f"Reloading with a context of {chosen.n_ctx:,} tokens{yarn}; "
                              "the conversation stays.", timeout=6)

    @on(EarlierMessages.Show)
    def _show_earlier(self) -> None:
        if not refused_while_busy(self.session, self.notify):
            self.transcript.show_conversation(everything=True)

    @on(ApprovalBar.TypedAway)
    def _typed_away(self, message: ApprovalBar.TypedAway) -> None:
        self.tools.typed_away(message.character)

    @on(ToolCallView.Decided)
    def _decided(self, message: ToolCallView.Decided) -> None:
        self.tools.decided(message.call_id, message.decision)
