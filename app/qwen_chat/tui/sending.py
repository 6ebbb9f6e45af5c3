"""The composer panel: the message box and its attachment bar, and what Enter does with the draft (a message,
an edit resent, `/file`, `/tools`, `/help`; a mistyped /word is kept, not sent), the turn started off the UI
thread with the draft given back if it fails, the drafts kept per conversation, and the files Ctrl+O picks.

It tells the app what happened with messages (`Sent`, `ToolsAsked`, `HelpAsked`); the app and the chat panel
call down.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message

from qwen_chat.session.chat import ChatSession
from qwen_chat.session.conversation import OpenConversation
from qwen_chat.store.records import Attachment, StoreError
from qwen_chat.tui.attachment_bar import AttachmentBar
from qwen_chat.tui.composer import Composer
from qwen_chat.tui.slash_commands import unknown_command, unknown_message

PROMPT_HINT = "Message Qwen…  (Alt+Enter or Ctrl+J: new line; Ctrl+G: editor; /help or F1: keys; Esc stops)"
ELSEWHERE = ("This conversation is open in another qwen-chat window: you can read it here, and its answers show up, "
             "but send from that window (or Ctrl+N for a new chat here).")


def refused_while_busy(session: ChatSession, notify: Callable[..., None]) -> bool:
    """The one refusal for everything that would change the conversation or the model mid-answer."""
    busy = session.busy()
    if busy:
        notify(busy, severity="warning")
    return busy is not None


def refused_elsewhere(conversation: OpenConversation, notify: Callable[..., None]) -> bool:
    """Another window has this conversation open: it answers there (two would interleave their turns)."""
    if conversation.claim():
        return False
    notify(ELSEWHERE, severity="warning", timeout=8)
    return True


class ComposerPanel(Vertical):
    DEFAULT_CSS = "ComposerPanel { height: auto; margin: 0 1; }"  # the margin the prompt had in the chat

    class Sent(Message):
        """A turn was started (its events follow): the conversation's title and the list may have changed."""

    class ToolsAsked(Message):
        """`/tools` was typed: the tools panel (F9)."""

    class HelpAsked(Message):
        """`/help` was typed: the keys and the commands (F1)."""

    def __init__(self, session: ChatSession, conversation: OpenConversation) -> None:
        super().__init__()
        self.session = session
        self.conversation = conversation
        self.editing: int | None = None  # the user message being edited (Ctrl+E), if any
        self._drafts: dict[int, str] = {}  # conversation id -> what was typed there and not sent
        self._draft_files: dict[int, list[Attachment]] = {}  # and the files attached there
        self._warned: str | None = None  # a draft with an unknown /word, told once: Enter again sends it
        self.bar = AttachmentBar()
        self.composer = Composer(placeholder=PROMPT_HINT, id="prompt")

    def compose(self) -> ComposeResult:
        yield self.bar
        yield self.composer

    def switch_draft(self, from_id: int, to_id: int) -> None:
        """The draft being typed stays with the conversation it was typed in."""
        self._drafts[from_id] = self.composer.value
        self.composer.value = self._drafts.pop(to_id, "")
        self._draft_files[from_id] = self.bar.files
        self.bar.set_files(self._draft_files.pop(to_id, []))

    def show_history(self) -> None:
        """Up and Down in the composer walk this conversation's prompts."""
        self.composer.set_history(self.conversation.prompts())

    @on(Composer.Submitted, "#prompt")
    def _submitted(self, event: Composer.Submitted) -> None:
        text = event.value
        if text.strip().lower() in ("/tools", "/help"):  # the tools panel (F9) or the help (F1): nothing is sent
            event.composer.value = ""
            self.post_message(self.ToolsAsked() if text.strip().lower() == "/tools" else self.HelpAsked())
            return
        if self._unknown_command(text):
            return  # the draft stays, to be corrected or sent with a second Enter
        if text.strip().startswith("/file") and text.strip()[5:6] in ("", " "):
            self._file_command(text.strip()[5:].strip())
            return
        current = self.conversation.current
        if (not text.strip() and not self.bar.files) or current is None:
            return
        if refused_while_busy(self.session, self.notify) or refused_elsewhere(self.conversation, self.notify):
            return  # the text stays in the composer (never cleared and put back: typing may go on meanwhile)
        event.composer.value = ""
        if self.editing is not None:
            message_id = self.editing
            self.set_editing(None)
            self.start_turn(lambda: self.session.edit_and_resend(message_id, text), text)
            return
        self.send(current.id, text)

    def _unknown_command(self, text: str) -> bool:
        """A draft starting with a /word that is no command is most likely a typo ("/hlep"): say so once and
        keep it; the same draft again is meant for the model (it may be a path or a word of its own)."""
        word = unknown_command(text)
        if word is None or self._warned == text:
            self._warned = None
            return False
        self._warned = text
        self.notify(unknown_message(word), severity="warning", timeout=8)
        return True

    def set_editing(self, message_id: int | None) -> None:
        self.editing = message_id
        box = self.composer
        box.placeholder = ("Editing: Enter resends it (later turns are kept as an earlier version); Esc cancels"
                           if message_id is not None else PROMPT_HINT)
        box.set_class(message_id is not None, "editing")

    def edit(self, message_id: int, text: str) -> None:
        self.composer.value = text
        self.set_editing(message_id)
        self.composer.focus()

    def send(self, conversation_id: int, text: str) -> None:
        files = tuple(self.bar.files)
        self.bar.set_files([])  # they go with this message; if it cannot be sent they come back (_send_failed)
        thinking = self.conversation.thinking_now(adding=text)  # from the history it keeps: no read of SQLite
        self.start_turn(lambda: self.session.send(conversation_id, text, files, thinking=thinking), text, files)

    def _file_command(self, argument: str) -> None:
        composer, typed = self.composer, self.composer.value

        async def attach() -> None:  # a worker: the file is read off the UI thread, which keeps answering keys
            message, error = await self.bar.command(argument, self._context_room())
            self._tell_attached(message, error)
            if not error and composer.value == typed:
                composer.value = ""  # a refused path stays, to be corrected (and anything typed since, kept)

        self.run_worker(attach(), group="attach")

    def attach(self, path: Path | None) -> None:
        """A file picked (or its path typed) in Ctrl+O's dialog, attached as `/file PATH` attaches it."""

        async def attach(path: Path) -> None:  # read off the UI thread, as /file reads it
            self._tell_attached(*await self.bar.attach(path, self._context_room()))

        if path is not None:
            self.run_worker(attach(path), group="attach")

    def _context_room(self) -> int | None:
        """Tokens the context has left for attached files; None while no model says how large it is."""
        session = self.session
        return session.model.n_ctx - session.model.context_used if session.model.n_ctx else None

    def _tell_attached(self, message: str, error: bool) -> None:
        self.notify(message, severity="error" if error else "information", timeout=8 if error else 4)

    @work(thread=True, group="send", exit_on_error=False)
    def start_turn(self, start: Callable[[], object], text: str = "", files: tuple[Attachment, ...] = ()) -> None:
        """Send, resend or regenerate off the UI thread (it writes to SQLite first); `text` goes back to the
        prompt if it fails, so nothing typed is lost."""
        try:
            start()
        except StoreError as exc:
            self.app.call_from_thread(self._send_failed, text, str(exc), files)
            return
        self.post_message(self.Sent())

    def _send_failed(self, text: str, error: str, files: tuple[Attachment, ...] = ()) -> None:
        if not self.composer.value:
            self.composer.value = text  # nothing typed is ever lost
        if files and not self.bar.files:
            self.bar.set_files(list(files))
        self.notify(error, severity="error", timeout=8)
