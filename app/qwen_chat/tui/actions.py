"""What the keys do: the app's actions on the chat and its conversations, also offered in the command palette.

QwenChatApp (app.py) builds on this class; the hooks at the top are the app's own (sending, drawing, loading).
The keys and the palette's entries themselves are listed in bindings.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from textual import work
from textual.app import App, SystemCommand
from textual.containers import VerticalScroll
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Input

from qwen_chat.hub.download_queue import DownloadQueue
from qwen_chat.qwen3.context_presets import context_presets
from qwen_chat.session.chat import ChatSession
from qwen_chat.session.sources import LocalModel, Server
from qwen_chat.store.database import SearchHit, Store
from qwen_chat.store.presence import Presence
from qwen_chat.store.records import Attachment, Conversation, StoreError
from qwen_chat.system.clipboard import system_copy
from qwen_chat.tui.attachment_bar import AttachmentBar
from qwen_chat.tui.bindings import PALETTE
from qwen_chat.tui.composer import Composer
from qwen_chat.tui.conversation_list import ConversationList
from qwen_chat.tui.conversation_screens import ContextScreen, CopyScreen, PersonasScreen, VersionsScreen, copy_choices
from qwen_chat.tui.dialogs import ConfirmDialog, RenameDialog
from qwen_chat.tui.downloads_screen import DownloadsScreen
from qwen_chat.tui.messages import AssistantMessage, UserMessage
from qwen_chat.tui.models_screen import EndpointModelsScreen, ModelsScreen
from qwen_chat.tui.printable import printable, printable_line
from qwen_chat.tui.search_screen import SearchScreen
from qwen_chat.tui.status_bar import StatusBar

ELSEWHERE = ("This conversation is open in another qwen-chat window: you can read it here, and its answers show up, "
             "but send from that window (or Ctrl+N for a new chat here).")


class ChatActions(App[None]):
    session: ChatSession
    store: Store
    conversation: Conversation | None = None
    _live: AssistantMessage | None
    _editing: int | None
    _drafts: dict[int, str]  # conversation id -> what was typed there and not sent
    presence: Presence
    _draft_files: dict[int, list[Attachment]]  # and the files attached there
    downloads: DownloadQueue

    # -- the app's hooks (app.py) --

    _status: StatusBar

    @property
    def status_bar(self) -> StatusBar:
        return self._status

    def _send(self, conversation_id: int, text: str) -> None:
        raise NotImplementedError

    def _start_turn(self, start: Callable[[], object], text: str = "",
                    files: tuple[Attachment, ...] = ()) -> object:
        raise NotImplementedError

    def _set_editing(self, message_id: int | None) -> None:
        raise NotImplementedError

    def _render_transcript(self, everything: bool = False) -> None:
        raise NotImplementedError

    def _update_status(self, mode_changed: bool = True) -> None:
        raise NotImplementedError

    def use_source(self, source: LocalModel | Server) -> None:
        raise NotImplementedError

    # -- notifications --

    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = True) -> None:
        """Every toast, the screens' included (Widget.notify calls this): file names, paths and errors are
        quoted in them, so control characters are made visible and nothing is read as markup (`markup` is
        ignored: no message here uses markup, and a file named "[bold]x" must show as named)."""
        super().notify(printable(message), title=printable_line(title), severity=severity, timeout=timeout,
                       markup=False)

    # -- conversations --

    def refused_elsewhere(self) -> bool:
        """Another window has this conversation open: it answers there (two would interleave their turns)."""
        if self.conversation is None or self.presence.claim(self.conversation.id):
            return False
        self.notify(ELSEWHERE, severity="warning", timeout=8)
        return True

    def refused_while_busy(self) -> bool:
        """The one refusal for everything that would change the conversation or the model mid-answer."""
        busy = self.session.busy()
        if busy:
            self.notify(busy, severity="warning")
        return busy is not None

    def _open(self, conversation: Conversation | None) -> None:
        """Show a conversation; the draft being typed stays with the one it was typed in."""
        if conversation is None:
            conversation = self.session.new_conversation()
        composer = self.query_one("#prompt", Composer)
        if self.conversation is not None and self.conversation.id != conversation.id:
            self._drafts[self.conversation.id] = composer.value
            composer.value = self._drafts.pop(conversation.id, "")
            bar = self.query_one(AttachmentBar)
            self._draft_files[self.conversation.id] = bar.files
            bar.set_files(self._draft_files.pop(conversation.id, []))
            self.presence.release(self.conversation.id)
        if not self.presence.claim(conversation.id):
            self.notify(ELSEWHERE, severity="warning", timeout=8)
        self.conversation = conversation
        self._refresh_history()
        self._refresh_list()
        self._render_transcript()
        self._update_status()

    def _refresh_history(self) -> None:
        """Up and Down in the composer walk this conversation's prompts."""
        if self.conversation is not None:
            prompts = [m.content for m in self.store.messages(self.conversation.id) if m.role == "user"]
            self.query_one("#prompt", Composer).set_history(prompts)

    def _refresh_list(self) -> None:
        current = self.conversation.id if self.conversation else None
        conversations = self.store.conversations()
        elsewhere = self.presence.held_elsewhere(c.id for c in conversations)
        self.query_one("#conversations", ConversationList).show(conversations, current, elsewhere)

    # -- actions --

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        typing = isinstance(self.focused, Input | Composer) and bool(self.focused.value)
        return not (action in ("delete_conversation", "edit_message") and typing)

    def action_stop(self) -> None:
        if self.session.generating:
            self.session.stop()
        elif self._editing is not None:
            self._set_editing(None)
            self.query_one("#prompt", Composer).value = ""

    def _selected_message(self, role: str | None = None) -> Widget | None:
        """The focused message in the transcript, else the last one (of `role` if given)."""
        focused = self.focused
        if isinstance(focused, UserMessage | AssistantMessage) and (
                role is None or isinstance(focused, UserMessage) == (role == "user")):
            return focused
        kinds = {"user": UserMessage, "assistant": AssistantMessage}.get(role or "", UserMessage | AssistantMessage)
        found = [w for w in self.query_one("#transcript", VerticalScroll).children if isinstance(w, kinds)]
        return found[-1] if found else None

    def action_regenerate(self) -> None:
        if self.conversation is None:
            return
        if self.refused_while_busy() or self.refused_elsewhere():
            return
        conversation_id = self.conversation.id
        self._start_turn(lambda: self.session.regenerate(conversation_id))

    def action_edit_message(self) -> None:
        if self.refused_while_busy() or self.refused_elsewhere():
            return
        message = self._selected_message("user")
        if not isinstance(message, UserMessage) or not message.message_id:
            self.notify("There is no message of yours to edit yet.", severity="warning")
            return
        box = self.query_one("#prompt", Composer)
        box.value = message.text
        self._set_editing(message.message_id)
        box.focus()

    def action_toggle_thinking(self) -> None:
        if self.conversation is None:
            return
        on = not self.session.thinking_now(self.conversation)
        self._send(self.conversation.id, "/think" if on else "/no_think")

    def action_presets(self) -> None:
        from qwen_chat.qwen3.sampling import preset_name
        from qwen_chat.tui.presets_screen import PresetsScreen

        if self.conversation is None:
            return
        slot = preset_name(self.session.variant, self.session.thinking_now(self.conversation))

        def done(changed: bool | None) -> None:
            if changed:
                self.notify("Preset saved: it applies from the next answer.", timeout=4)

        self.push_screen(PresetsScreen(slot, self.session.quantized), done)

    def _copy_text(self, text: str) -> None:
        self.copy_to_clipboard(text)  # OSC 52: reaches the local clipboard over SSH in most terminals
        tool = system_copy(text)  # and the desktop's own clipboard tool where there is one
        self.notify(f"Copied {len(text):,} characters" + (f" (also with {tool})" if tool else ""), timeout=3)

    def action_copy_message(self) -> None:
        widget = self._selected_message("assistant") if not isinstance(self.focused, UserMessage) else self.focused
        if widget is None:
            self.notify("There is no message to copy yet.", severity="warning")
            return
        text = widget.answer_text if isinstance(widget, AssistantMessage) else getattr(widget, "text", "")
        if len(copy_choices(text)) == 1:  # no code blocks: nothing to choose
            self._copy_text(text)
            return
        self.push_screen(CopyScreen(text, "Copy"), lambda chosen: self._copy_text(chosen) if chosen else None)

    def action_versions(self) -> None:
        widget = self._selected_message()
        message_id: int = getattr(widget, "message_id", 0)
        if self.conversation is None or not message_id:
            return
        if not isinstance(self.focused, UserMessage | AssistantMessage):
            # nothing selected: the newest message that has earlier versions
            versioned = self.store.versions_by_message(self.conversation.id)
            message_id = max(versioned, default=message_id)
        try:
            versions = self.store.earlier_versions(message_id)
            current = [m for m in self.store.messages(self.conversation.id) if m.id >= message_id]
        except StoreError as exc:
            self.notify(str(exc), severity="error")
            return
        if not versions:
            self.notify("This message has no earlier versions (Ctrl+E edits a message, Ctrl+R regenerates).")
            return
        self.push_screen(VersionsScreen(versions, current))

    def action_personas(self) -> None:
        if self.conversation is None:
            return
        conversation_id = self.conversation.id

        def chosen(prompt: str | None) -> None:
            if prompt is None:
                return
            try:
                self.store.set_system_prompt(conversation_id, prompt)
                if self.conversation and self.conversation.id == conversation_id:
                    self.conversation = self.store.conversation(conversation_id)
            except StoreError as exc:
                self.notify(str(exc), severity="error")
                return
            self.notify("System prompt set for this conversation; it applies from the next message." if prompt
                        else "This conversation has no system prompt now.")
            if not self.session.generating:
                self._render_transcript()

        self.push_screen(PersonasScreen(self.store, self.conversation.system_prompt), chosen)

    def action_context(self) -> None:
        session = self.session
        if session.info is None:
            self.notify("An endpoint's server sets its context; a local model's can be changed here.")
            return
        presets = context_presets(session.info, session.variant)
        note = "Changing the context re-plans memory and reloads the model; the conversation stays."

        def chosen(key: str | None) -> None:
            if key is not None:
                self._change_context(key)

        self.push_screen(ContextScreen(presets, session.n_ctx, note, session.planner_chose_context), chosen)

    @work(thread=True, group="load", exit_on_error=False)
    def _change_context(self, key: str) -> None:
        try:
            chosen = self.session.change_context(key)  # hardware detection and planning: off the UI thread
        except Exception as exc:  # StoreError, ValueError, DoesNotFit: each says why
            self.call_from_thread(self.notify, str(exc), severity="error", timeout=10)
            return
        self.status_bar.state = "loading"
        yarn = f" with YaRN ×{chosen.yarn_factor}" if chosen.yarn_factor else ""
        self.call_from_thread(self.notify, f"Reloading with a context of {chosen.n_ctx:,} tokens{yarn}; "
                              "the conversation stays.", timeout=6)

    def action_new_conversation(self) -> None:
        if self.refused_while_busy():
            return
        self._open(self.session.new_conversation())
        self.query_one("#prompt", Composer).focus()

    def action_rename_conversation(self) -> None:
        if self.conversation is None:
            return
        conversation_id = self.conversation.id

        def done(title: str | None) -> None:
            if title:
                try:
                    self.store.rename(conversation_id, title)
                    if self.conversation and self.conversation.id == conversation_id:
                        self.conversation = self.store.conversation(conversation_id)
                except StoreError as exc:
                    self.notify(str(exc), severity="error")
                self._refresh_list()

        self.push_screen(RenameDialog(self.conversation.title), done)

    def action_delete_conversation(self) -> None:
        if self.conversation is None:
            return
        if self.refused_while_busy():
            return
        conversation = self.conversation

        def done(yes: bool | None) -> None:
            if not yes:
                return
            try:
                self.store.delete(conversation.id)
            except StoreError as exc:
                self.notify(str(exc), severity="error")
                return
            self._open(self.store.latest_conversation())

        self.push_screen(ConfirmDialog(f"Delete “{conversation.title}” and all its messages?"), done)

    def action_toggle_sidebar(self) -> None:
        sidebar = self.query_one("#sidebar")
        sidebar.display = not sidebar.display

    def action_models(self) -> None:
        source = self.session.source
        if isinstance(source, Server):
            url, key = source.url, source.api_key

            def switch(model: str | None) -> None:
                if model and not self.session.busy():
                    self.use_source(Server(url, key, model))

            self.push_screen(EndpointModelsScreen(url, key), switch)
            return

        def done(path: Path | None) -> None:
            if path is None:
                return
            if self.refused_while_busy():
                return
            self.use_source(LocalModel(path))

        self.push_screen(ModelsScreen(), done)

    def action_search(self) -> None:
        def jump(hit: SearchHit | None) -> None:
            if hit is None:
                return
            if self.refused_while_busy():
                return
            try:
                self._open(self.store.conversation(hit.conversation_id))
            except StoreError as exc:
                self.notify(str(exc), severity="error")
                return
            self.call_after_refresh(self._scroll_to_message, hit.message_id)

        self.push_screen(SearchScreen(self.store), jump)

    def _scroll_to_message(self, message_id: int) -> None:
        transcript = self.query_one("#transcript", VerticalScroll)
        for widget in transcript.children:
            if getattr(widget, "message_id", None) == message_id:
                transcript.scroll_to_widget(widget, animate=False, top=True)
                widget.add_class("found")
                return

    def action_downloads(self) -> None:
        self.push_screen(DownloadsScreen(self.downloads))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for title, help_text, action in PALETTE:
            yield SystemCommand(title, help_text, getattr(self, f"action_{action}"))
