"""The qwen-chat Textual app: conversation list, transcript, input and status bar."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, ScreenStackError, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, ListItem, ListView, Static

from ..chat_session import AnswerSaved, AnswerStarted, ChatSession, Notice, SessionEvent, UserSaved
from ..download_queue import DownloadQueue, Job
from ..engine import Failed, Loaded, LoadProgress, Token
from ..qwen3 import Variant
from ..store import Conversation, Store, StoreError
from ..thinking_stream import Part
from .dialogs import ConfirmDialog, RenameDialog
from .downloads_screen import DownloadsScreen
from .messages import AssistantMessage, NoticeLine, UserMessage
from .models_screen import EndpointModelsScreen, ModelsScreen
from .search_screen import SearchScreen
from .theme import register_shipped_themes

DRAIN_INTERVAL = 1 / 30  # tokens are batched into UI updates at most this often


class ConversationItem(ListItem):
    def __init__(self, conversation: Conversation) -> None:
        super().__init__(Label(Text(conversation.title), markup=False))
        self.conversation_id = conversation.id


class QwenChatApp(App[None]):
    TITLE = "qwen-chat"
    CSS_PATH = "app.tcss"
    BINDINGS = [
        Binding("escape", "stop", "Stop", id="stop"),
        Binding("ctrl+t", "toggle_thinking", "Thinking", id="toggle-thinking"),
        Binding("ctrl+n", "new_conversation", "New chat", id="new-conversation"),
        Binding("f2", "rename_conversation", "Rename", id="rename-conversation"),
        # priority so it works from the prompt; check_action hands ctrl+d back to the prompt while it has text
        Binding("ctrl+d", "delete_conversation", "Delete", id="delete-conversation", priority=True),
        Binding("ctrl+b", "toggle_sidebar", "Chats", id="toggle-sidebar"),
        Binding("f3", "models", "Models", id="models"),
        Binding("f4", "downloads", "Downloads", id="downloads"),
        Binding("ctrl+f", "search", "Search", id="search"),
        Binding("ctrl+q", "quit", "Quit", id="quit", priority=True),
    ]

    def __init__(self, store: Store, model_path: Path | None = None, n_ctx: int | None = None,
                 endpoint: tuple[str, str | None, str | None] | None = None) -> None:
        """A local GGUF (`model_path`) or an OpenAI-compatible `endpoint` (url, api key, model)."""
        super().__init__()
        self.store = store
        self.model_path = model_path or Path(endpoint[0] if endpoint else "")
        self.endpoint = endpoint
        self.n_ctx = n_ctx
        self._events: deque[SessionEvent] = deque()
        self.session = ChatSession(store, self._events.append)
        self.downloads = DownloadQueue(self._events.append)
        self.conversation: Conversation | None = None
        self._live: AssistantMessage | None = None
        self._state = "starting"
        self._last_speed = 0.0

    # -- layout --

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="sidebar"):
                yield Static("Chats", id="sidebar-title")
                yield ListView(id="conversations")
            with Vertical(id="chat"):
                yield VerticalScroll(id="transcript")
                yield Input(placeholder="Message Qwen…  (/think, /no_think; Esc stops)", id="prompt")
        yield Static("", id="status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        register_shipped_themes(self)
        self.theme_changed_signal.subscribe(self, self._save_theme)
        self.query_one("#transcript", VerticalScroll).anchor()
        self.set_interval(DRAIN_INTERVAL, self._drain)
        if self.store.recovered:
            self.notify(f"{self.store.recovered} answer(s) were cut off when qwen-chat last ended; "
                        "they are kept and marked interrupted.", severity="warning", timeout=8)
        self._load_model()
        self._open(self.store.latest_conversation())
        self.query_one("#prompt", Input).focus()

    def _save_theme(self, theme: object) -> None:
        from ..settings import save_theme

        try:
            save_theme(getattr(theme, "name", str(theme)))
        except OSError as exc:
            self.notify(f"The theme could not be saved: {exc}", severity="warning")

    def on_unmount(self) -> None:
        self.downloads.close()  # pauses in effect: partial files stay for the next start
        self.session.close()

    # -- model --

    @work(thread=True, group="load", exit_on_error=False)
    def _load_model(self) -> None:
        self._state = "loading"
        try:
            if self.endpoint is not None:
                self.session.connect(*self.endpoint)
            else:
                self.session.load_model(self.model_path, self.n_ctx)
        except Exception as exc:  # file, memory and template problems all end up as one message
            self._events.append(Failed(None, str(exc)))

    # -- conversations --

    def _open(self, conversation: Conversation | None) -> None:
        if conversation is None:
            conversation = self.session.new_conversation()
        self.conversation = conversation
        self._refresh_list()
        self._render_transcript()
        self._update_status()

    def _refresh_list(self) -> None:
        view = self.query_one("#conversations", ListView)
        conversations = self.store.conversations()
        view.clear()
        view.extend(ConversationItem(c) for c in conversations)
        for index, c in enumerate(conversations):
            if self.conversation and c.id == self.conversation.id:
                view.index = index

    def _render_transcript(self) -> None:
        transcript = self.query_one("#transcript", VerticalScroll)
        transcript.remove_children()
        self._live = None
        if self.conversation is None:
            return
        widgets = []
        for message in self.store.messages(self.conversation.id):
            if message.role == "user":
                widgets.append(UserMessage(message.content, message.id))
            elif message.role == "assistant":
                widgets.append(AssistantMessage(message))
        transcript.mount_all(widgets)
        transcript.scroll_end(animate=False)

    @on(ListView.Selected, "#conversations")
    def _selected(self, event: ListView.Selected) -> None:
        item = event.item
        current = self.conversation.id if self.conversation else None
        if not isinstance(item, ConversationItem) or item.conversation_id == current:
            return
        if self.session.generating:
            self.notify("An answer is still being written: press Esc to stop it first.", severity="warning")
            self._refresh_list()
            return
        try:
            self._open(self.store.conversation(item.conversation_id))
        except StoreError as exc:
            self.notify(str(exc), severity="error")
        self.query_one("#prompt", Input).focus()

    # -- sending --

    @on(Input.Submitted, "#prompt")
    def _submitted(self, event: Input.Submitted) -> None:
        text = event.value
        if not text.strip() or self.conversation is None:
            return
        event.input.value = ""
        self._send(self.conversation.id, text)

    @work(thread=True, group="send", exit_on_error=False)
    def _send(self, conversation_id: int, text: str) -> None:
        try:
            self.session.send(conversation_id, text)
        except StoreError as exc:
            self.call_from_thread(self._send_failed, text, str(exc))
            return
        self.call_from_thread(self._after_send)

    def _send_failed(self, text: str, error: str) -> None:
        box = self.query_one("#prompt", Input)
        if not box.value:
            box.value = text  # nothing typed is ever lost
        self.notify(error, severity="error", timeout=8)

    def _after_send(self) -> None:
        if self.conversation is not None:
            self.conversation = self.store.conversation(self.conversation.id)
            self._refresh_list()
        self._update_status()

    # -- events from the engine, batched --

    async def _drain(self) -> None:
        if not self._events or not self._chat_visible():
            return  # nothing new, or the app is closing while the engine still reports
        pending: list[tuple[Part, str]] = []
        while self._events:
            event = self._events.popleft()
            if isinstance(event, Token):
                if pending and pending[-1][0] is event.part:
                    pending[-1] = (event.part, pending[-1][1] + event.text)
                else:
                    pending.append((event.part, event.text))
                continue
            await self._flush_tokens(pending)
            pending = []
            await self._handle(event)
        await self._flush_tokens(pending)
        self._update_status()

    def _chat_visible(self) -> bool:
        try:
            return bool(self.query("#transcript"))
        except ScreenStackError:
            return False

    async def _flush_tokens(self, pending: list[tuple[Part, str]]) -> None:
        live = self._live
        if live is None:
            return
        for part, text in pending:
            if part is Part.THINKING:
                live.add_thinking(text)
            else:
                await live.add_answer(text)

    async def _handle(self, event: SessionEvent) -> None:
        transcript = self.query_one("#transcript", VerticalScroll)
        if isinstance(event, LoadProgress):
            self._state = f"loading {event.fraction:.0%}"
        elif isinstance(event, Loaded):
            self._state = "ready"
            if self.conversation and not self.store.messages(self.conversation.id):
                # the variant is known now: a fresh conversation starts in the model's own mode
                self.store.set_thinking(self.conversation.id, self.session.variant is not Variant.NO_THINKING)
                self.conversation = self.store.conversation(self.conversation.id)
        elif isinstance(event, Failed):
            self._state = "load failed"
            await transcript.mount(NoticeLine(f"The model could not be loaded: {event.message}", error=True))
        elif isinstance(event, UserSaved):
            if self.conversation and event.message.conversation_id == self.conversation.id:
                await transcript.mount(UserMessage(event.message.content, event.message.id))
                transcript.scroll_end(animate=False)  # sending means the user wants to follow the answer
        elif isinstance(event, AnswerStarted):
            if self.conversation and event.message.conversation_id == self.conversation.id:
                self._live = AssistantMessage()
                self._live.message_id = event.message.id
                await transcript.mount(self._live)
            self._state = "generating"
        elif isinstance(event, AnswerSaved):
            if self._live is not None and self._live.message_id == event.message.id:
                # the final Markdown re-render changes heights for a moment: keep a following view at the end
                following = transcript.scroll_y >= transcript.max_scroll_y - 1
                await self._live.finish(event.message)
                if following:
                    transcript.scroll_end(animate=False)
            self._live = None
            self._state = "ready"
            if event.done is not None:
                self._last_speed = event.done.tokens_per_second
        elif isinstance(event, Job):
            for screen in self.screen_stack:
                if isinstance(screen, DownloadsScreen):
                    screen.show(event)
            if event.state == "done":
                self.notify(f"{event.ref} is ready: F3 and Enter load it. {event.message}", timeout=8)
            elif event.state == "failed":
                self.notify(f"{event.ref}: {event.message}", severity="error", timeout=12)
            return
        elif isinstance(event, Notice):
            await transcript.mount(NoticeLine(event.text, event.error))
            if self.conversation:
                self.conversation = self.store.conversation(self.conversation.id)

    def _update_status(self) -> None:
        session = self.session
        parts = [session.model_name or self.model_path.name]
        if self.conversation is not None and (session.template is not None or session.remote_model is not None):
            if session.variant.can_switch:
                parts.append("thinking on" if session.thinking_now(self.conversation) else "thinking off")
            else:
                parts.append("always thinks" if session.variant is Variant.ALWAYS_THINKS else "no thinking")
        if self._last_speed:
            parts.append(f"{self._last_speed:.1f} tok/s")
        if session.n_ctx:
            parts.append(f"ctx {session.context_used:,}/{session.n_ctx:,}")
        if session.plan is not None and session.ready:
            parts.append(session.plan.short(session.gpu_layers))
        parts.append(self._state)
        self.query_one("#status", Static).update(Text("  │  ".join(parts)))

    # -- actions --

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        typing = isinstance(self.focused, Input) and bool(self.focused.value)
        return not (action == "delete_conversation" and typing)

    def action_stop(self) -> None:
        if self.session.generating:
            self.session.stop()

    def action_toggle_thinking(self) -> None:
        if self.conversation is None:
            return
        on = not self.session.thinking_now(self.conversation)
        self._send(self.conversation.id, "/think" if on else "/no_think")

    def action_new_conversation(self) -> None:
        if self.session.generating:
            self.notify("An answer is still being written: press Esc to stop it first.", severity="warning")
            return
        self._open(self.session.new_conversation())
        self.query_one("#prompt", Input).focus()

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
        if self.session.generating:
            self.notify("An answer is still being written: press Esc to stop it first.", severity="warning")
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
        if self.endpoint is not None:
            url, key, _ = self.endpoint

            def switch(model: str | None) -> None:
                if model and not self.session.generating:
                    self.endpoint = (url, key, model)
                    self._load_model()

            self.push_screen(EndpointModelsScreen(url, key), switch)
            return

        def done(path: Path | None) -> None:
            if path is None:
                return
            if self.session.generating:
                self.notify("An answer is still being written: press Esc to stop it first.", severity="warning")
                return
            self.model_path, self.n_ctx, self.endpoint = path, None, None
            self._last_speed = 0.0
            self._load_model()

        self.push_screen(ModelsScreen(), done)

    def action_search(self) -> None:
        def jump(hit: object) -> None:
            if hit is None:
                return
            if self.session.generating:
                self.notify("An answer is still being written: press Esc to stop it first.", severity="warning")
                return
            try:
                self._open(self.store.conversation(hit.conversation_id))  # type: ignore[attr-defined]
            except StoreError as exc:
                self.notify(str(exc), severity="error")
                return
            self.call_after_refresh(self._scroll_to_message, hit.message_id)  # type: ignore[attr-defined]

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
        yield SystemCommand("Stop generation", "Stop the answer being written (Esc)", self.action_stop)
        yield SystemCommand("Thinking on/off", "Switch thinking for this conversation (Ctrl+T)",
                            self.action_toggle_thinking)
        yield SystemCommand("New conversation", "Start a new chat (Ctrl+N)", self.action_new_conversation)
        yield SystemCommand("Rename conversation", "Rename this chat (F2)", self.action_rename_conversation)
        yield SystemCommand("Delete conversation", "Delete this chat (Ctrl+D)", self.action_delete_conversation)
        yield SystemCommand("Show/hide chats", "Toggle the conversation list (Ctrl+B)", self.action_toggle_sidebar)
        yield SystemCommand("Models", "The Qwen3 catalog with what fits this machine (F3)", self.action_models)
        yield SystemCommand("Downloads", "Download progress, pause, resume, cancel (F4)", self.action_downloads)
        yield SystemCommand("Search", "Search all conversations (Ctrl+F)", self.action_search)
