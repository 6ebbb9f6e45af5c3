"""The qwen-chat Textual app: a shell around the chat panel (chat_panel.py: transcript and composer panel), the
sidebar's conversation list and the status bar.

The app is handed its session (the CLI builds it, tests hand it one with a FakeEngine) and holds the open
conversation (session/conversation.py). Session events arrive as Textual messages (tui/session_events.py); one
handler takes them in order and calls down into the widgets. The keys' actions are here (their bindings and
palette entries in bindings.py): each asks the open conversation or pushes a screen and calls down with its
answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widgets import Footer, Input, ListView, Static

from qwen_chat.engines.protocol import Failed
from qwen_chat.hub.download_queue import DownloadQueue
from qwen_chat.session.chat import ChatSession
from qwen_chat.session.conversation import OpenConversation, SearchHit
from qwen_chat.session.sources import LocalModel, Server
from qwen_chat.store.records import Conversation, StoreError
from qwen_chat.tui import paste_guard, warm_up
from qwen_chat.tui.bindings import BINDINGS, PALETTE
from qwen_chat.tui.chat_panel import ChatPanel
from qwen_chat.tui.composer import Composer
from qwen_chat.tui.conversation_list import ConversationItem, ConversationList
from qwen_chat.tui.dialogs import ConfirmDialog, RenameDialog
from qwen_chat.tui.downloads_screen import DownloadsScreen
from qwen_chat.tui.file_picker import FilePicker
from qwen_chat.tui.models_screen import EndpointModelsScreen, ModelsScreen
from qwen_chat.tui.printable import printable, printable_line
from qwen_chat.tui.search_screen import SearchScreen
from qwen_chat.tui.sending import ComposerPanel, refused_while_busy
from qwen_chat.tui.session_events import (
    DownloadChanged,
    Inbox,
    ModelFailed,
    ModelLoaded,
    ModelProgress,
    SessionMessage,
    TokensWaiting,
)
from qwen_chat.tui.status_bar import StatusBar
from qwen_chat.tui.theme import register_shipped_themes

OTHER_WINDOWS_EVERY = 1.5  # seconds between looks at what other windows on this database changed


class QwenChatApp(App[None]):
    TITLE = "qwen-chat"
    CSS_PATH = "app.tcss"
    BINDINGS = BINDINGS

    def __init__(self, session: ChatSession, downloads: DownloadQueue | None = None) -> None:
        """The app runs `session` (a model file or an endpoint as its source) and closes it when it exits."""
        super().__init__()
        paste_guard.install()  # issue 25: nothing in a bracketed paste may reach Textual's parser as a key
        self.session = session
        self.inbox = Inbox(self.post_message)
        session.sink = self.inbox.put
        self.downloads = downloads or DownloadQueue(self.inbox.put)
        self.conversation = OpenConversation(session)
        self.status_bar = StatusBar()  # held, not queried: workers and closing screens update it too
        self.chat = ChatPanel(session, self.conversation, self.inbox, self.status_bar)
        self.keymap: dict[str, str] = {}  # settings.toml [keys], read at mount

    # -- layout --

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="sidebar"):
                yield Static("Chats", id="sidebar-title")
                yield ConversationList(id="conversations")
            yield self.chat
        yield self.status_bar
        yield Footer(compact=True)  # 21 actions: all of them fit a 200-column terminal; F1 lists them all

    def on_mount(self) -> None:
        from qwen_chat.config.check import check as check_settings
        from qwen_chat.config.keymap import load_keymap

        register_shipped_themes(self)
        warm_up.start()  # lexers and parsers loaded now, not in the first answer's first frame
        ids = {b.id for b in self.BINDINGS if isinstance(b, Binding) and b.id}
        for problem in check_settings(ids):  # each problem once, with its key; the value is ignored
            self.notify(problem, severity="warning", timeout=10)
        self.keymap = load_keymap(ids)  # the help screen (F1) shows the keys as remapped
        self.set_keymap(self.keymap)
        self._theme_at_start: str | None = self.theme  # announced a tick later: not the user's choice
        self.theme_changed_signal.subscribe(self, self._save_theme)
        self.chat.transcript.anchor()
        if recovered := self.conversation.recovered():
            self.notify(f"{recovered} answer(s) were cut off when qwen-chat last ended; "
                        "they are kept and marked interrupted.", severity="warning", timeout=8)
        self._load_model()
        self.conversation.mark_version()
        self.show_conversation(self.conversation.first())
        self.set_interval(OTHER_WINDOWS_EVERY, self._watch_other_windows)
        self.chat.composer_panel.composer.focus()

    def _save_theme(self, theme: object) -> None:
        from qwen_chat.config.settings import save_theme

        name = getattr(theme, "name", str(theme))
        if name == self._theme_at_start:  # the saved theme, or the fallback for a broken one: keep the setting
            self._theme_at_start = None
            return
        self._theme_at_start = None
        try:
            save_theme(name)
        except OSError as exc:
            self.notify(f"The theme could not be saved: {exc}", severity="warning")

    def on_unmount(self) -> None:
        self.downloads.close()  # pauses in effect: partial files stay for the next start
        self.session.close()
        self.conversation.close()

    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = True) -> None:
        """Every toast, the screens' included (Widget.notify calls this): file names, paths and errors are
        quoted in them, so control characters are made visible and nothing is read as markup (`markup` is
        ignored: no message here uses markup, and a file named "[bold]x" must show as named)."""
        super().notify(printable(message), title=printable_line(title), severity=severity, timeout=timeout,
                       markup=False)

    # -- the open conversation, the list and the status bar --

    def show_conversation(self, conversation: Conversation | None) -> None:
        """Open a conversation (a new one for None) in the chat panel."""
        self.chat.open(conversation)
        self._refresh_list()
        self._update_status()

    def open_conversation(self, conversation_id: int) -> None:
        """`show_conversation` by id; raises StoreError when it no longer exists."""
        self.chat.open_id(conversation_id)
        self._refresh_list()
        self._update_status()

    def _refresh_list(self) -> None:
        current = self.conversation.current
        listed, elsewhere = self.conversation.conversations()
        self.query_one("#conversations", ConversationList).show(listed, current.id if current else None, elsewhere)

    def _update_status(self, mode_changed: bool = True) -> None:
        if mode_changed:
            self.status_bar.mode = self.conversation.mode_label()
        self.status_bar.show(self.session)

    def _watch_other_windows(self) -> None:
        """Other windows' new conversations, titles and answers show up here without a restart."""
        if not self.chat.transcript.shown() or not self.query("#conversations"):
            return  # unread till the panel closes; no list: the app is closing and its timer fired once more
        changed = self.conversation.changed_elsewhere()
        if changed is None:
            return
        if not changed:
            # nothing written, but another window may have switched to another conversation (no write):
            # the marks follow its locks
            conversations = self.query_one("#conversations", ConversationList)
            conversations.mark(self.conversation.held_elsewhere(conversations.listed))
            return
        self._refresh_list()
        if not self.conversation.claim() and not self.session.generating:
            self.chat.follow_elsewhere()  # the other window is answering it: follow along

    @on(ListView.Selected, "#conversations")
    def _selected(self, event: ListView.Selected) -> None:
        item, current = event.item, self.conversation.current
        if not isinstance(item, ConversationItem) or (current is not None and item.conversation_id == current.id):
            return
        if refused_while_busy(self.session, self.notify):
            self._refresh_list()
            return
        try:
            self.open_conversation(item.conversation_id)
        except StoreError as exc:
            self.notify(str(exc), severity="error")
        self.chat.composer_panel.composer.focus()

    @on(ComposerPanel.Sent)
    def _sent(self) -> None:
        self.conversation.refresh_record()
        self._refresh_list()
        self._update_status()

    # -- the model --

    @work(thread=True, group="load", exit_on_error=False)
    def _load_model(self) -> None:
        from qwen_chat.config.settings import load_chat

        self.status_bar.state = "loading"
        try:
            self.session.open(context=load_chat().context)
        except Exception as exc:  # file, memory and template problems all end up as one message
            self.inbox.put(Failed(None, str(exc)))

    def use_source(self, source: LocalModel | Server) -> None:
        """Switch to another model file or served model (F3); the conversation stays."""
        self.session.source = source
        self.status_bar.last_speed = 0.0
        self.status_bar.last_drafting = ""
        self._load_model()

    # -- the session's events, in order --

    @contextlib.asynccontextmanager
    async def _in_order(self, message: SessionMessage) -> AsyncIterator[ChatPanel | None]:
        """Around every event: the tokens that came before the event are drawn first; afterwards the status bar
        is refreshed and tokens that waited for this event are scheduled. Yields the chat panel, or None while
        it is not shown (a panel covers it, or the app is closing)."""
        transcript = self.chat.transcript
        try:
            await transcript.draw(self.inbox.take_tokens(before=message.seq))
            yield self.chat if transcript.shown() else None
        finally:
            self.inbox.handled(message)
        if transcript.shown():
            self._update_status()
        transcript.pacer.schedule_tokens()

    @on(TokensWaiting)
    async def _tokens_waiting(self) -> None:
        await self.chat.transcript.pacer.tokens_waiting()

    @on(SessionMessage)
    async def _session_event(self, message: SessionMessage) -> None:
        async with self._in_order(message) as chat:
            if isinstance(message, ModelProgress):
                self.status_bar.state = f"loading {message.event.fraction:.0%}"
            elif isinstance(message, ModelLoaded):
                self.status_bar.state = "ready"
                if chat is not None:
                    self.conversation.start_in_model_mode()
            elif isinstance(message, ModelFailed):
                self.status_bar.state = "load failed"
                if chat is not None:
                    await chat.transcript.model_failed(message.event.message)
            elif isinstance(message, DownloadChanged):
                job = message.event
                for screen in self.screen_stack:
                    if isinstance(screen, DownloadsScreen):
                        screen.show(job)
                if job.state == "done":
                    self.notify(f"{job.ref} is ready: F3 and Enter load it. {job.message}", timeout=8)
                elif job.state == "failed":
                    self.notify(f"{job.ref}: {job.message}", severity="error", timeout=12)
            else:
                await self.chat.session_event(message, chat is not None)

    # -- the keys' actions --

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        typing = isinstance(self.focused, Input | Composer) and bool(self.focused.value)
        return not (action in ("delete_conversation", "edit_message") and typing)

    def action_stop(self) -> None:
        panel = self.chat.composer_panel
        if self.session.generating:
            self.session.stop()
        elif panel.editing is not None:
            panel.set_editing(None)
            panel.composer.value = ""

    def action_regenerate(self) -> None:
        self.chat.regenerate()

    def action_edit_message(self) -> None:
        self.chat.edit_message()

    def action_toggle_thinking(self) -> None:
        self.chat.toggle_thinking()

    def action_presets(self) -> None:
        self.chat.presets()

    def action_copy_message(self) -> None:
        self.chat.copy_message()

    def action_versions(self) -> None:
        self.chat.versions()

    def action_personas(self) -> None:
        self.chat.personas()

    def action_context(self) -> None:
        self.chat.context()

    def action_new_conversation(self) -> None:
        if not refused_while_busy(self.session, self.notify):
            self.show_conversation(None)
            self.chat.composer_panel.composer.focus()

    def action_rename_conversation(self) -> None:
        if self.conversation.current is None:
            return
        conversation_id = self.conversation.current.id

        def done(title: str | None) -> None:
            if title:
                try:
                    self.conversation.rename(conversation_id, title)
                except StoreError as exc:
                    self.notify(str(exc), severity="error")
                self._refresh_list()

        self.push_screen(RenameDialog(self.conversation.current.title), done)

    def action_delete_conversation(self) -> None:
        conversation = self.conversation.current
        if conversation is None or refused_while_busy(self.session, self.notify):
            return

        def done(yes: bool | None) -> None:
            if not yes:
                return
            try:
                following = self.conversation.delete(conversation.id)
            except StoreError as exc:
                self.notify(str(exc), severity="error")
                return
            self.show_conversation(following)

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
            if path is not None and not refused_while_busy(self.session, self.notify):
                self.use_source(LocalModel(path))

        self.push_screen(ModelsScreen(), done)

    def action_search(self) -> None:
        def jump(hit: SearchHit | None) -> None:
            if hit is None or refused_while_busy(self.session, self.notify):
                return
            try:
                self.open_conversation(hit.conversation_id)
            except StoreError as exc:
                self.notify(str(exc), severity="error")
                return
            self.call_after_refresh(self.chat.transcript.scroll_to_message, hit.message_id)

        self.push_screen(SearchScreen(self.conversation.search), jump)

    def action_downloads(self) -> None:
        self.push_screen(DownloadsScreen(self.downloads))

    def action_attach_file(self) -> None:
        """Ctrl+O: a file picked (or its path typed) in a dialog, attached as `/file PATH` attaches it."""
        self.push_screen(FilePicker(Path.cwd()), self.chat.composer_panel.attach)

    @on(ComposerPanel.ToolsAsked)
    def action_tools(self) -> None:
        self.chat.tools_panel()

    @on(ComposerPanel.HelpAsked)
    def action_help(self) -> None:
        """F1, /help: every key as the user has it ([keys] applied) and every slash command."""
        from qwen_chat.tui.help_screen import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.BINDINGS, self.keymap))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for title, help_text, action in PALETTE:
            yield SystemCommand(title, help_text, getattr(self, f"action_{action}"))
        yield SystemCommand("Tools", "MCP tool servers, their tools on or off for this chat, standing approvals "
                            "(F9, /tools)", self.action_tools)
