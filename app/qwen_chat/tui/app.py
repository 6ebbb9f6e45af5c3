"""The qwen-chat Textual app: conversation list, transcript, input and status bar."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, ScreenStackError, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Footer, Input, Label, ListItem, ListView, Static

from qwen_chat.engines.protocol import Failed, Loaded, LoadProgress, Token
from qwen_chat.models.download_queue import DownloadQueue, Job
from qwen_chat.qwen3.context_presets import context_presets
from qwen_chat.qwen3.template import Variant
from qwen_chat.qwen3.thinking import Part
from qwen_chat.session.chat import (
    AnswerSaved,
    AnswerStarted,
    ChatSession,
    ContextTrimmed,
    Notice,
    Rewound,
    SessionEvent,
    UserSaved,
)
from qwen_chat.store.database import Conversation, Store, StoreError
from qwen_chat.system.clipboard import system_copy
from qwen_chat.tui import gc_pause
from qwen_chat.tui.conversation_screens import ContextScreen, CopyScreen, PersonasScreen, VersionsScreen, copy_choices
from qwen_chat.tui.dialogs import ConfirmDialog, RenameDialog
from qwen_chat.tui.downloads_screen import DownloadsScreen
from qwen_chat.tui.messages import AssistantMessage, NoticeLine, TrimMarker, UserMessage
from qwen_chat.tui.models_screen import EndpointModelsScreen, ModelsScreen
from qwen_chat.tui.search_screen import SearchScreen
from qwen_chat.tui.theme import register_shipped_themes

# Rendering paces itself: after each render the next waits until the UI thread's share of a core would stay at
# about UI_SHARE (the CPU a render cycle took, over UI_SHARE), within MIN_GAP..MAX_GAP. On a machine whose cores
# all decode, every millisecond the UI takes is one the model does not get; when rendering gets slower, batches
# grow instead of queueing up.
IDLE_COLLECT_AFTER = 1.0  # seconds after an answer: the garbage collections held while it streamed (gc_pause.py)
UI_SHARE = 0.04
MIN_GAP = 1 / 15
MAX_GAP = 0.5
PROMPT_HINT = "Message Qwen…  (/think, /no_think, /budget N; Esc stops)"


class ConversationItem(ListItem):
    def __init__(self, conversation: Conversation) -> None:
        super().__init__(Label(Text(conversation.title), markup=False))
        self.conversation_id = conversation.id


class Wake(Message):
    """Session events are waiting in the app's inbox (posted once per batch, from any thread)."""


class QwenChatApp(App[None]):
    TITLE = "qwen-chat"
    CSS_PATH = "app.tcss"
    BINDINGS = [
        Binding("escape", "stop", "Stop", id="stop"),
        Binding("ctrl+t", "toggle_thinking", "Think", id="toggle-thinking"),
        Binding("ctrl+r", "regenerate", "Redo", id="regenerate"),
        # priority like ctrl+d: with text in the prompt, ctrl+e stays the prompt's "go to end"
        Binding("ctrl+e", "edit_message", "Edit", id="edit-message", priority=True),
        Binding("ctrl+y", "copy_message", "Copy", id="copy-message"),
        Binding("ctrl+n", "new_conversation", "New", id="new-conversation"),
        Binding("f2", "rename_conversation", "Rename", id="rename-conversation"),
        # priority so it works from the prompt; check_action hands ctrl+d back to the prompt while it has text
        Binding("ctrl+d", "delete_conversation", "Del", id="delete-conversation", priority=True),
        Binding("ctrl+b", "toggle_sidebar", "Chats", id="toggle-sidebar"),
        Binding("f3", "models", "Models", id="models"),
        Binding("f4", "downloads", "Downloads", id="downloads"),
        Binding("ctrl+f", "search", "Search", id="search"),
        Binding("f5", "presets", "Preset", id="presets"),
        Binding("f6", "personas", "Persona", id="personas"),
        Binding("f7", "context", "Context", id="context"),
        Binding("f8", "versions", "Versions", id="versions"),
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
        self._wake_posted = False  # a Wake is on its way, or a render is scheduled: no need to post another
        self._render_timer: Timer | None = None
        self._urgent = False  # an event other than a token is waiting
        self._next_render = 0.0
        self._cpu_mark = time.thread_time()
        self.session = ChatSession(store, self._receive)
        self.downloads = DownloadQueue(self._receive)
        self.conversation: Conversation | None = None
        self._live: AssistantMessage | None = None
        self._state = "starting"
        self._last_speed = 0.0
        self._mode = ""  # the thinking-mode part of the status bar, refreshed on events other than tokens
        self._editing: int | None = None  # the user message being edited (Ctrl+E), if any
        self._thinking_tokens = 0  # of the answer being written (the budget meter)
        self._budget = 0

    # -- layout --

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="sidebar"):
                yield Static("Chats", id="sidebar-title")
                yield ListView(id="conversations")
            with Vertical(id="chat"):
                yield VerticalScroll(id="transcript")
                yield Input(placeholder=PROMPT_HINT, id="prompt")
        yield Static("", id="status", markup=False)
        yield Footer(compact=True)  # 18 actions: all of them fit a 180-column terminal

    def on_mount(self) -> None:
        from qwen_chat.config.check import check as check_settings
        from qwen_chat.config.settings import load_keymap

        register_shipped_themes(self)
        ids = {b.id for b in self.BINDINGS if isinstance(b, Binding) and b.id}
        for problem in check_settings(ids):  # each problem once, with its key; the value is ignored
            self.notify(problem, severity="warning", timeout=10)
        self.set_keymap(load_keymap(ids))
        self.theme_changed_signal.subscribe(self, self._save_theme)
        self.query_one("#transcript", VerticalScroll).anchor()
        if self.store.recovered:
            self.notify(f"{self.store.recovered} answer(s) were cut off when qwen-chat last ended; "
                        "they are kept and marked interrupted.", severity="warning", timeout=8)
        self._load_model()
        self._open(self.store.latest_conversation())
        self.query_one("#prompt", Input).focus()

    def _save_theme(self, theme: object) -> None:
        from qwen_chat.config.settings import save_theme

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
                from qwen_chat.config.settings import load_chat

                self.session.load_model(self.model_path, self.n_ctx, context=load_chat().context)
        except Exception as exc:  # file, memory and template problems all end up as one message
            self._receive(Failed(None, str(exc)))

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
        widgets: list[Widget] = []
        if self.conversation.system_prompt:  # the model reads it first: show what it is (F6 changes it)
            first = self.conversation.system_prompt.strip().splitlines()[0]
            widgets.append(NoticeLine(f"System prompt (F6): {first[:100]}{'…' if len(first) > 100 else ''}"))
        messages = self.store.messages(self.conversation.id)
        versions = self.store.versions_by_message(self.conversation.id)
        trimmed = next((m for m in reversed(messages) if m.role == "assistant" and m.context_from_id), None)
        for message in messages:
            if trimmed is not None and message.id == trimmed.context_from_id:
                widgets.append(TrimMarker(sum(1 for m in messages if m.role == "user" and m.id < message.id),
                                          self.session.n_ctx))
            if message.role == "user":
                widgets.append(UserMessage(message.content, message.id, versions.get(message.id, 1)))
            elif message.role == "assistant":
                widgets.append(AssistantMessage(message, versions.get(message.id, 1)))
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
        if self._editing is not None:
            message_id, self._editing = self._editing, None
            self._set_editing(None)
            self._start_turn(lambda: self.session.edit_and_resend(message_id, text), text)
            return
        self._send(self.conversation.id, text)

    def _set_editing(self, message_id: int | None) -> None:
        self._editing = message_id
        box = self.query_one("#prompt", Input)
        box.placeholder = ("Editing: Enter resends it (later turns are kept as an earlier version); Esc cancels"
                           if message_id is not None else PROMPT_HINT)
        box.set_class(message_id is not None, "editing")

    def _send(self, conversation_id: int, text: str) -> None:
        self._start_turn(lambda: self.session.send(conversation_id, text), text)

    @work(thread=True, group="send", exit_on_error=False)
    def _start_turn(self, start: Callable[[], object], text: str = "") -> None:
        """Send, resend or regenerate off the UI thread (it writes to SQLite first); `text` goes back to the
        prompt if it fails, so nothing typed is lost."""
        try:
            start()
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

    # -- events from the session, batched --

    def _receive(self, event: SessionEvent | Job) -> None:
        """The session's and the downloads' sink: called on their threads, it only queues the event."""
        self._events.append(event)
        if not isinstance(event, Token):
            self._urgent = True  # only tokens wait for the next frame: a notice or a saved answer shows at once
        if not self._wake_posted or self._urgent:
            self._wake_posted = True
            self.post_message(Wake())

    @on(Wake)
    async def _woken(self) -> None:
        wait = self._next_render - time.monotonic()
        if wait > 0 and not self._urgent:  # rendered a moment ago: this batch waits and grows
            if self._render_timer is None:
                self._render_timer = self.set_timer(wait, self._render_events)
            return
        await self._render_events()

    async def _render_events(self) -> None:
        if self._render_timer is not None:
            self._render_timer.stop()
        self._render_timer = None
        self._wake_posted = self._urgent = False  # from here on, a new event posts a new Wake
        cpu, now = time.thread_time(), time.monotonic()
        cycle = cpu - self._cpu_mark  # what the UI thread did since the last render began (that render included)
        if now - self._next_render > MAX_GAP:
            cycle = 0.0  # the first render after a pause: idle time says nothing about the cost of a render
        self._cpu_mark = cpu
        await self._drain()
        self._next_render = time.monotonic() + min(MAX_GAP, max(MIN_GAP, cycle / UI_SHARE))
        if self._live is not None:  # an answer is being drawn
            gc_pause.hold()

    async def _drain(self) -> None:
        if not self._events or not self._chat_visible():
            return  # nothing new, or the app is closing while the engine still reports
        pending: list[tuple[Part, str]] = []
        only_tokens = True
        while self._events:
            event = self._events.popleft()
            if isinstance(event, Token):
                self._thinking_tokens = event.thinking_tokens
                if event.stream is not None and self._live is not None:
                    self._live.follow(event.stream)
                if pending and pending[-1][0] is event.part:
                    pending[-1] = (event.part, pending[-1][1] + event.text)
                else:
                    pending.append((event.part, event.text))
                continue
            await self._flush_tokens(pending)
            pending = []
            only_tokens = False
            await self._handle(event)
        await self._flush_tokens(pending)
        if not only_tokens or self._thinking_tokens:  # answer tokens alone change nothing in the status bar
            self._update_status(mode_changed=not only_tokens)

    def _chat_visible(self) -> bool:
        try:
            return bool(self.query("#transcript"))
        except ScreenStackError:
            return False

    async def _flush_tokens(self, pending: list[tuple[Part, str]]) -> None:
        live = self._live
        if live is None:
            return
        live.thinking_tokens = self._thinking_tokens
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
                versions = self.store.version_count(event.message.id)  # 2 or more after an edit
                await transcript.mount(UserMessage(event.message.content, event.message.id, versions))
                transcript.scroll_end(animate=False)  # sending means the user wants to follow the answer
        elif isinstance(event, Rewound):
            if self.conversation and event.conversation_id == self.conversation.id:
                # the replaced turns leave the transcript (the store keeps them: F8 shows them)
                children = list(transcript.children)
                first = next((i for i, w in enumerate(children)
                              if getattr(w, "message_id", 0) >= event.from_message_id), len(children))
                await transcript.remove_children(children[first:])
        elif isinstance(event, ContextTrimmed):
            if self.conversation and event.conversation_id == self.conversation.id:
                for old in transcript.query(TrimMarker):
                    await old.remove()
                before = next((w for w in transcript.children
                               if getattr(w, "message_id", 0) == event.from_message_id), None)
                await transcript.mount(TrimMarker(event.dropped_turns, event.n_ctx), before=before)
            self.notify("The conversation is longer than the context: the oldest turns are not sent for this "
                        "answer (marked in the transcript; they stay saved).", severity="warning", timeout=8)
        elif isinstance(event, AnswerStarted):
            self._thinking_tokens, self._budget = 0, event.message.thinking_budget
            if self.conversation and event.message.conversation_id == self.conversation.id:
                self._live = AssistantMessage()
                self._live.message_id = event.message.id
                await transcript.mount(self._live)
            self._state = "generating"
        elif isinstance(event, AnswerSaved):
            if self._live is not None and self._live.message_id == event.message.id:
                # the final Markdown re-render changes heights for a moment: keep a following view at the end
                following = transcript.scroll_y >= transcript.max_scroll_y - 1
                self._live.versions = self.store.version_count(event.message.id)  # 2 or more if regenerated
                await self._live.finish(event.message)
                if following:
                    transcript.scroll_end(animate=False)
            self._live = None
            self._state = "ready"
            self.set_timer(IDLE_COLLECT_AFTER, self._collect_when_idle)
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

    def _collect_when_idle(self) -> None:
        if self._live is None:
            gc_pause.release()

    def _mode_label(self) -> str:
        session = self.session
        if self.conversation is None or (session.template is None and session.remote_model is None):
            return ""
        if session.variant.can_switch:  # reads the conversation from SQLite: not on every token batch
            return "thinking on" if session.thinking_now(self.conversation) else "thinking off"
        return "always thinks" if session.variant is Variant.ALWAYS_THINKS else "no thinking"

    def _update_status(self, mode_changed: bool = True) -> None:
        session = self.session
        if mode_changed:
            self._mode = self._mode_label()
        parts = [session.model_name or self.model_path.name] + ([self._mode] if self._mode else [])
        if self._thinking_tokens:  # live while thinking; afterwards what the last answer used
            verb = "thinking" if session.generating else "thought"
            parts.append(f"{verb} {self._thinking_tokens:,}/{self._budget:,}" if self._budget
                         else f"{verb} {self._thinking_tokens:,} tokens")
        if self._last_speed and not session.generating:
            parts.append(f"{self._last_speed:.1f} tok/s")
        if session.n_ctx:
            share = session.context_used / session.n_ctx
            parts.append(f"ctx {session.context_used:,}/{session.n_ctx:,} ({share:.0%})")
        if session.plan is not None and session.ready:
            parts.append(session.plan.short(session.gpu_layers))
        parts.append(self._state)
        self.query_one("#status", Static).update(Text("  │  ".join(parts)))

    # -- actions --

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        typing = isinstance(self.focused, Input) and bool(self.focused.value)
        return not (action in ("delete_conversation", "edit_message") and typing)

    def action_stop(self) -> None:
        if self.session.generating:
            self.session.stop()
        elif self._editing is not None:
            self._set_editing(None)
            self.query_one("#prompt", Input).value = ""

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
        if self.session.generating:
            self.notify("An answer is still being written: press Esc to stop it first.", severity="warning")
            return
        conversation_id = self.conversation.id
        self._start_turn(lambda: self.session.regenerate(conversation_id))

    def action_edit_message(self) -> None:
        if self.session.generating:
            self.notify("An answer is still being written: press Esc to stop it first.", severity="warning")
            return
        message = self._selected_message("user")
        if not isinstance(message, UserMessage) or not message.message_id:
            self.notify("There is no message of yours to edit yet.", severity="warning")
            return
        box = self.query_one("#prompt", Input)
        box.value = message.text
        box.cursor_position = len(box.value)  # typing goes on at the end, as in any editor
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
        if self.conversation is None or widget is None or not getattr(widget, "message_id", 0):
            return
        message_id = widget.message_id  # type: ignore[attr-defined]
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
        self._state = "loading"
        yarn = f" with YaRN ×{chosen.yarn_factor}" if chosen.yarn_factor else ""
        self.call_from_thread(self.notify, f"Reloading with a context of {chosen.n_ctx:,} tokens{yarn}; "
                              "the conversation stays.", timeout=6)

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
        yield SystemCommand("Regenerate", "Answer the last message again; the old answer is kept (Ctrl+R)",
                            self.action_regenerate)
        yield SystemCommand("Edit message", "Edit your selected or last message and resend it (Ctrl+E)",
                            self.action_edit_message)
        yield SystemCommand("Copy", "Copy the selected message or the last answer, or one of its code blocks "
                            "(Ctrl+Y)", self.action_copy_message)
        yield SystemCommand("Sampling presets", "View and edit the sampling preset in use (F5)", self.action_presets)
        yield SystemCommand("Persona", "Choose or save a system prompt for this conversation (F6)",
                            self.action_personas)
        yield SystemCommand("Context size", "Native, 64K/128K with YaRN, or 256K; reloads the model (F7)",
                            self.action_context)
        yield SystemCommand("Earlier versions", "Versions of an edited or regenerated turn (F8)",
                            self.action_versions)
