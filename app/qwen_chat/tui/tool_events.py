"""The app's side of a tool loop: the session's tool events drawn on the calls in the transcript, the user's
answers to an approval prompt passed back to the session, and the tools panel (F9, /tools).

QwenChatApp (app.py) builds on this class; the hooks at the top are the app's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager

from textual import on
from textual.app import SystemCommand
from textual.containers import VerticalScroll
from textual.screen import Screen

from qwen_chat.session.tool_loop import Decision
from qwen_chat.tui import gc_pause
from qwen_chat.tui.composer import Composer
from qwen_chat.tui.paced_tokens import PacedTokens
from qwen_chat.tui.session_events import SessionMessage, ToolApprovalAsked, ToolCallUpdated, ToolLoopFinished
from qwen_chat.tui.tool_calls_view import ApprovalBar, ToolCallView

IDLE_COLLECT_AFTER = 1.0  # as after an answer (app.py)
_DECISIONS: tuple[Decision, ...] = ("once", "tool", "server", "deny")
# The prompt never takes the keyboard: typing goes on in the composer, and only a deliberate move answers
ASKING = ("A tool call waits for your approval above: Shift+Tab moves to it (then a allows once, d denies); "
          "your typing stays in the message box. Esc stops the answer.")


class ToolEvents(PacedTokens):
    # -- the app's hooks (app.py) --

    def _in_order(self, message: SessionMessage) -> AbstractAsyncContextManager[VerticalScroll | None]:
        raise NotImplementedError

    def _here(self, conversation_id: int) -> bool:
        raise NotImplementedError

    # -- events --

    def _call_view(self, call_id: int) -> ToolCallView | None:
        """A call drawn in the chat, also while a panel (F9, F3…) covers it."""
        chat = self.screen_stack[0] if self.screen_stack else None
        return next((v for v in chat.query(ToolCallView) if v.call.id == call_id), None) if chat else None

    def _back_to_prompt(self) -> None:
        """After an approval prompt: focus goes back to the prompt if it was on the prompt's buttons."""
        focused = self.focused
        if self._chat_visible() and (focused is None or any(isinstance(n, ToolCallView) for n in focused.ancestors)):
            self.query_one("#prompt", Composer).focus()

    @on(ToolApprovalAsked)
    async def _approval_asked(self, message: ToolApprovalAsked) -> None:
        event = message.event
        async with self._in_order(message) as transcript:
            self.status_bar.state = "waiting for your approval of a tool call"
            view = self._call_view(event.call.id) if self._here(event.conversation_id) else None
            if view is None:  # not drawn (the chat is closing): the call waits; Esc still stops it
                self.notify("A tool call waits for your approval; Esc stops it.", severity="warning")
                return
            view.ask(event.server, event.description)
            if transcript is None:  # a panel covers the chat
                self.notify("A tool call waits for your approval in the chat: close this panel, then Shift+Tab "
                            "reaches its buttons.", severity="warning", timeout=10)
            else:
                transcript.scroll_end(animate=False)
                self.notify(ASKING, severity="warning", timeout=10)

    @on(ToolCallUpdated)
    async def _call_updated(self, message: ToolCallUpdated) -> None:
        call = message.event.call
        async with self._in_order(message):
            view = self._call_view(call.id)
            if view is not None:
                had_focus = view.has_focus_within
                view.update_call(call)
                if had_focus and not view.asking:
                    self._back_to_prompt()
            if call.status == "running":
                self.status_bar.state = f"running the tool {call.name} (Esc cancels it)"
            elif call.finished and self.session.generating:
                self.status_bar.state = "tool calls"

    @on(ToolLoopFinished)
    async def _loop_finished(self, message: ToolLoopFinished) -> None:
        async with self._in_order(message):
            chat = self.screen_stack[0] if self.screen_stack else None
            for view in chat.query(ToolCallView) if chat else ():
                if view.asking:
                    view.stop_asking()
            self._back_to_prompt()
            self._live = None
            self.status_bar.state = "ready"
            self.set_timer(IDLE_COLLECT_AFTER, self._release_gc)

    def _release_gc(self) -> None:
        if self._live is None:
            gc_pause.release()

    @on(ApprovalBar.TypedAway)
    def _typed_away(self, message: ApprovalBar.TypedAway) -> None:
        """A key typed at the approval prompt that answers nothing: it was meant for the message."""
        if self._chat_visible():
            composer = self.query_one("#prompt", Composer)
            composer.focus()
            composer.insert(message.character)

    @on(ToolCallView.Decided)
    def _decided(self, message: ToolCallView.Decided) -> None:
        decision: Decision = next((d for d in _DECISIONS if d == message.decision), "deny")
        if not self.session.decide(message.call_id, decision):
            self.notify("That tool call no longer waits for an answer.", severity="warning")
        if self._chat_visible():
            self.query_one("#prompt", Composer).focus()

    # -- the tools panel --

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Tools", "MCP tool servers, their tools on or off for this chat, standing approvals "
                            "(F9, /tools)", self.action_tools)

    def action_tools(self) -> None:
        """F9, /tools: the servers and their tools, on or off for this conversation, and the standing rules."""
        from qwen_chat.tui.tools_screen import ToolsScreen

        if self.conversation is None or isinstance(self.screen, ToolsScreen):
            return
        conversation_id = self.conversation.id

        def closed(_: None) -> None:
            if self.conversation is not None and self.conversation.id == conversation_id:
                self.conversation = self.store.conversation(conversation_id)

        self.push_screen(ToolsScreen(self.session.tools, self.store, conversation_id), closed)
