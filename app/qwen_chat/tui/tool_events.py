"""The chat panel's side of a tool loop: the session's tool events drawn on the calls in the transcript, and the
user's answers to an approval prompt passed back to the session. The prompt never takes the keyboard: typing
goes on in the composer, and only a deliberate move (Shift+Tab) reaches it.
"""

from __future__ import annotations

from qwen_chat.session.chat import ChatSession
from qwen_chat.session.events import ToolApprovalNeeded
from qwen_chat.session.tool_loop import Decision
from qwen_chat.store.records import ToolCallRecord
from qwen_chat.tui import gc_pause
from qwen_chat.tui.composer import Composer
from qwen_chat.tui.status_bar import StatusBar
from qwen_chat.tui.tool_calls_view import ToolCallView
from qwen_chat.tui.transcript import Transcript

IDLE_COLLECT_AFTER = 1.0  # as after an answer (chat_panel.py)
DECISIONS: tuple[Decision, ...] = ("once", "tool", "server", "deny")
ASKING = ("A tool call waits for your approval above: Shift+Tab moves to it (then a allows once, d denies); "
          "your typing stays in the message box. Esc stops the answer.")


class ToolEvents:
    """Held by the chat panel: the tool calls' views in its transcript, and the composer focus goes back to."""

    def __init__(self, session: ChatSession, transcript: Transcript, composer: Composer, status: StatusBar) -> None:
        self.session = session
        self.transcript = transcript
        self.composer = composer
        self.status = status

    def back_to_prompt(self) -> None:
        """After an approval prompt: focus goes back to the prompt if it was on the prompt's buttons."""
        focused = self.transcript.app.focused
        if self.transcript.shown() and (
                focused is None or any(isinstance(n, ToolCallView) for n in focused.ancestors)):
            self.composer.focus()

    def approval_asked(self, event: ToolApprovalNeeded, here: bool, shown: bool) -> None:
        transcript = self.transcript
        self.status.state = "waiting for your approval of a tool call"
        view = transcript.call_view(event.call.id) if here else None
        if view is None:  # not drawn (the chat is closing): the call waits; Esc still stops it
            transcript.notify("A tool call waits for your approval; Esc stops it.", severity="warning")
            return
        view.ask(event.server, event.description)
        if not shown:  # a panel covers the chat
            transcript.notify("A tool call waits for your approval in the chat: close this panel, then Shift+Tab "
                              "reaches its buttons.", severity="warning", timeout=10)
        else:
            transcript.scroll_end(animate=False)
            transcript.notify(ASKING, severity="warning", timeout=10)

    def call_updated(self, call: ToolCallRecord) -> None:
        view = self.transcript.call_view(call.id)
        if view is not None:
            had_focus = view.has_focus_within
            view.update_call(call)
            if had_focus and not view.asking:
                self.back_to_prompt()
        if call.status == "running":
            self.status.state = f"running the tool {call.name} (Esc cancels it)"
        elif call.finished and self.session.generating:
            self.status.state = "tool calls"

    def loop_finished(self) -> None:
        transcript = self.transcript
        for view in transcript.query(ToolCallView):
            if view.asking:
                view.stop_asking()
        self.back_to_prompt()
        transcript.live = None
        self.status.state = "ready"
        transcript.set_timer(IDLE_COLLECT_AFTER, self._release_gc)

    def _release_gc(self) -> None:
        if self.transcript.live is None:
            gc_pause.release()

    def typed_away(self, character: str) -> None:
        """A key typed at the approval prompt that answers nothing: it was meant for the message."""
        if self.transcript.shown():
            self.composer.focus()
            self.composer.insert(character)

    def decided(self, call_id: int, decision_name: str) -> None:
        decision: Decision = next((d for d in DECISIONS if d == decision_name), "deny")
        if not self.session.decide(call_id, decision):
            self.transcript.notify("That tool call no longer waits for an answer.", severity="warning")
        if self.transcript.shown():
            self.composer.focus()
