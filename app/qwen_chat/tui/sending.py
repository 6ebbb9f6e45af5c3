"""The composer's side of the app: what Enter does with the draft (a message, an edit resent, `/file`,
`/tools`), Ctrl+O's file picker, the turn started off the UI thread with the draft given back if it fails, and
Ctrl+G's editor.

QwenChatApp (app.py) builds on this class.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from textual import on, work

from qwen_chat.store.records import Attachment, StoreError
from qwen_chat.tui.attachment_bar import AttachmentBar
from qwen_chat.tui.composer import Composer
from qwen_chat.tui.external_editor import EditorError, edit_in_editor
from qwen_chat.tui.file_picker import FilePicker
from qwen_chat.tui.tool_events import ToolEvents

PROMPT_HINT = "Message Qwen…  (Alt+Enter or Ctrl+J: new line; Ctrl+G: editor; /think, /no_think; Esc stops)"


class Sending(ToolEvents):
    @on(Composer.Submitted, "#prompt")
    def _submitted(self, event: Composer.Submitted) -> None:
        text = event.value
        bar = self.query_one(AttachmentBar)
        if text.strip() == "/tools":  # the tools panel (F9): nothing is sent
            event.composer.value = ""
            self.action_tools()
            return
        if text.strip().startswith("/file") and text.strip()[5:6] in ("", " "):
            self._file_command(event.composer, bar, text.strip()[5:].strip())
            return
        if (not text.strip() and not bar.files) or self.conversation is None:
            return
        if self.refused_while_busy() or self.refused_elsewhere():
            return  # the text stays in the composer (never cleared and put back: typing may go on meanwhile)
        event.composer.value = ""
        if self._editing is not None:
            message_id, self._editing = self._editing, None
            self._set_editing(None)
            self._start_turn(lambda: self.session.edit_and_resend(message_id, text), text)
            return
        self._send(self.conversation.id, text)

    def _set_editing(self, message_id: int | None) -> None:
        self._editing = message_id
        box = self.query_one("#prompt", Composer)
        box.placeholder = ("Editing: Enter resends it (later turns are kept as an earlier version); Esc cancels"
                           if message_id is not None else PROMPT_HINT)
        box.set_class(message_id is not None, "editing")

    def _send(self, conversation_id: int, text: str) -> None:
        bar = self.query_one(AttachmentBar)
        files = tuple(bar.files)
        bar.set_files([])  # they go with this message; if it cannot be sent they come back (_send_failed)
        self._start_turn(lambda: self.session.send(conversation_id, text, files), text, files)

    def _file_command(self, composer: Composer, bar: AttachmentBar, argument: str) -> None:
        typed = composer.value

        async def attach() -> None:  # a worker: the file is read off the UI thread, which keeps answering keys
            message, error = await bar.command(argument, self._context_room())
            self._tell_attached(message, error)
            if not error and composer.value == typed:
                composer.value = ""  # a refused path stays, to be corrected (and anything typed since, kept)

        self.run_worker(attach(), group="attach")

    def action_attach_file(self) -> None:
        """Ctrl+O: a file picked (or its path typed) in a dialog, attached as `/file PATH` attaches it."""

        async def attach(path: Path) -> None:  # read off the UI thread, as /file reads it
            self._tell_attached(*await self.query_one(AttachmentBar).attach(path, self._context_room()))

        def chosen(path: Path | None) -> None:
            if path is not None:
                self.run_worker(attach(path), group="attach")

        self.push_screen(FilePicker(Path.cwd()), chosen)

    def _context_room(self) -> int | None:
        """Tokens the context has left for attached files; None while no model says how large it is."""
        session = self.session
        return session.n_ctx - session.context_used if session.n_ctx else None

    def _tell_attached(self, message: str, error: bool) -> None:
        self.notify(message, severity="error" if error else "information", timeout=8 if error else 4)

    @work(thread=True, group="send", exit_on_error=False)
    def _start_turn(self, start: Callable[[], object], text: str = "", files: tuple[Attachment, ...] = ()) -> None:
        """Send, resend or regenerate off the UI thread (it writes to SQLite first); `text` goes back to the
        prompt if it fails, so nothing typed is lost."""
        try:
            start()
        except StoreError as exc:
            self.call_from_thread(self._send_failed, text, str(exc), files)
            return
        self.call_from_thread(self._after_send)

    def _send_failed(self, text: str, error: str, files: tuple[Attachment, ...] = ()) -> None:
        box = self.query_one("#prompt", Composer)
        if not box.value:
            box.value = text  # nothing typed is ever lost
        bar = self.query_one(AttachmentBar)
        if files and not bar.files:
            bar.set_files(list(files))
        self.notify(error, severity="error", timeout=8)

    def _after_send(self) -> None:
        if self.conversation is not None:
            self.conversation = self.store.conversation(self.conversation.id)
            self._refresh_list()
            self._refresh_history()
        self._update_status()

    def action_external_editor(self) -> None:
        """Ctrl+G: the draft in $VISUAL or $EDITOR (the app steps aside while it runs); what is saved comes back."""
        composer = self.query_one("#prompt", Composer)
        try:
            edited = edit_in_editor(composer.value, self.suspend)
        except EditorError as exc:
            self.notify(str(exc), severity="error", timeout=8)
            return
        composer.value = edited
        composer.focus()
