"""The qwen-chat Textual app: the chat itself (transcript, prompt, status bar) and the session's events.

The app is handed its session (the CLI builds it, tests hand it one with a FakeEngine). Session events arrive
as Textual messages, one handler per type (tui/session_events.py); tokens come in paced batches. The actions
of the keys are in actions.py, what Enter does with the draft in sending.py.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.timer import Timer
from textual.widgets import Footer, ListView, Static

from qwen_chat.engines.protocol import Failed
from qwen_chat.hub.download_queue import DownloadQueue
from qwen_chat.qwen3.template import Variant
from qwen_chat.session.chat import ChatSession
from qwen_chat.session.sources import LocalModel, Server
from qwen_chat.store.presence import Presence
from qwen_chat.store.records import Attachment, Conversation, StoreError
from qwen_chat.tui import gc_pause, paste_guard, warm_up
from qwen_chat.tui.attachment_bar import AttachmentBar
from qwen_chat.tui.bindings import BINDINGS
from qwen_chat.tui.composer import Composer
from qwen_chat.tui.conversation_list import ConversationItem, ConversationList
from qwen_chat.tui.downloads_screen import DownloadsScreen
from qwen_chat.tui.messages import AssistantMessage, EarlierMessages, NoticeLine, TrimMarker, UserMessage
from qwen_chat.tui.sending import PROMPT_HINT, Sending
from qwen_chat.tui.session_events import (
    AnswerBegan,
    AnswerFinished,
    ContextWasTrimmed,
    DownloadChanged,
    Inbox,
    ModelFailed,
    ModelLoaded,
    ModelProgress,
    NoticeArrived,
    SessionMessage,
    TranscriptRewound,
    UserMessageSaved,
)
from qwen_chat.tui.status_bar import StatusBar, mode_label
from qwen_chat.tui.theme import register_shipped_themes
from qwen_chat.tui.transcript import transcript_widgets

IDLE_COLLECT_AFTER = 1.0  # seconds after an answer: the garbage collections held while it streamed (gc_pause.py)
OTHER_WINDOWS_EVERY = 1.5  # seconds between looks at what other windows on this database changed


class QwenChatApp(Sending):
    TITLE = "qwen-chat"
    CSS_PATH = "app.tcss"
    BINDINGS = BINDINGS

    def __init__(self, session: ChatSession, downloads: DownloadQueue | None = None) -> None:
        """The app runs `session` (a model file or an endpoint as its source) and closes it when it exits."""
        super().__init__()
        paste_guard.install()  # issue 25: nothing in a bracketed paste may reach Textual's parser as a key
        self.session = session
        self.store = session.store
        self.inbox = Inbox(self.post_message)
        session.sink = self.inbox.put
        self.downloads = downloads or DownloadQueue(self.inbox.put)
        self._render_timer: Timer | None = None
        self._next_render = 0.0
        self._cpu_mark = time.thread_time()
        self._live: AssistantMessage | None = None
        self._editing: int | None = None  # the user message being edited (Ctrl+E), if any
        self._drafts: dict[int, str] = {}
        self._draft_files: dict[int, list[Attachment]] = {}
        self.presence = Presence(self.store.path)  # which conversations other windows have open
        self._data_version = -1
        self._status = StatusBar()  # held, not queried: workers and closing screens update it too

    # -- layout --

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="sidebar"):
                yield Static("Chats", id="sidebar-title")
                yield ConversationList(id="conversations")
            with Vertical(id="chat"):
                yield VerticalScroll(id="transcript")
                yield AttachmentBar()
                yield Composer(placeholder=PROMPT_HINT, id="prompt")
        yield self._status
        yield Footer(compact=True)  # 20 actions: all of them fit a 190-column terminal

    def on_mount(self) -> None:
        from qwen_chat.config.check import check as check_settings
        from qwen_chat.config.keymap import load_keymap

        register_shipped_themes(self)
        warm_up.start()  # lexers and parsers loaded now, not in the first answer's first frame
        ids = {b.id for b in self.BINDINGS if isinstance(b, Binding) and b.id}
        for problem in check_settings(ids):  # each problem once, with its key; the value is ignored
            self.notify(problem, severity="warning", timeout=10)
        self.set_keymap(load_keymap(ids))
        self._theme_at_start: str | None = self.theme  # announced a tick later: not the user's choice
        self.theme_changed_signal.subscribe(self, self._save_theme)
        self.query_one("#transcript", VerticalScroll).anchor()
        if self.store.recovered:
            self.notify(f"{self.store.recovered} answer(s) were cut off when qwen-chat last ended; "
                        "they are kept and marked interrupted.", severity="warning", timeout=8)
        self._load_model()
        # taken before the list is first read, so the first look sees whatever another window changed since
        # (if it cannot be read now, the first look refreshes the list anyway)
        with contextlib.suppress(StoreError):
            self._data_version = self.store.data_version()
        self._open(self._first_conversation())
        self.set_interval(OTHER_WINDOWS_EVERY, self._watch_other_windows)
        self.query_one("#prompt", Composer).focus()

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
        self.presence.close()

    def _first_conversation(self) -> Conversation | None:
        """The latest conversation, unless another window has it open: then a new one (None)."""
        latest = self.store.latest_conversation()
        return latest if latest is not None and not self.presence.open_elsewhere(latest.id) else None

    def _watch_other_windows(self) -> None:
        """Other windows' new conversations, titles and answers show up here without a restart."""
        if not self._chat_visible():
            return  # the version stays unread: what changed meanwhile shows when the panel closes
        try:
            version = self.store.data_version()
        except StoreError:
            return
        if version == self._data_version:
            # nothing written, but another window may have switched to another conversation (no write):
            # the marks follow its locks
            conversations = self.query_one("#conversations", ConversationList)
            conversations.mark(self.presence.held_elsewhere(conversations.listed))
            return
        self._data_version = version
        self._refresh_list()
        if self.conversation is not None and not self.presence.claim(self.conversation.id) \
                and not self.session.generating:
            self._render_transcript()  # the other window is answering it: follow along

    def _update_status(self, mode_changed: bool = True) -> None:
        bar = self.status_bar
        if mode_changed:
            bar.mode = mode_label(self.session, self.conversation)
        bar.show(self.session)

    # -- model --

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
        self._load_model()

    # -- the transcript --

    def _render_transcript(self, everything: bool = False) -> None:
        transcript = self.query_one("#transcript", VerticalScroll)
        transcript.remove_children()
        self._live = None
        if self.conversation is not None:
            transcript.mount_all(transcript_widgets(self.store, self.conversation, self.session.n_ctx, everything))
            if not everything:
                transcript.scroll_end(animate=False)

    @on(EarlierMessages.Show)
    def _show_earlier(self) -> None:
        if not self.refused_while_busy():
            self._render_transcript(everything=True)

    @on(ListView.Selected, "#conversations")
    def _selected(self, event: ListView.Selected) -> None:
        item = event.item
        current = self.conversation.id if self.conversation else None
        if not isinstance(item, ConversationItem) or item.conversation_id == current:
            return
        if self.refused_while_busy():
            self._refresh_list()
            return
        try:
            self._open(self.store.conversation(item.conversation_id))
        except StoreError as exc:
            self.notify(str(exc), severity="error")
        self.query_one("#prompt", Composer).focus()

    # -- the other events, one handler each --

    @contextlib.asynccontextmanager
    async def _in_order(self, message: SessionMessage) -> AsyncIterator[VerticalScroll | None]:
        """Around every event handler: the tokens that came before the event are drawn first; afterwards the
        status bar is refreshed and tokens that waited for this event are scheduled. Yields the transcript,
        or None while the app is closing."""
        try:
            await self._draw(self.inbox.take_tokens(before=message.seq))
            yield self.query_one("#transcript", VerticalScroll) if self._chat_visible() else None
        finally:
            self.inbox.handled(message)
        if self._chat_visible():
            self._update_status()
        self._schedule_tokens()

    def _here(self, conversation_id: int) -> bool:
        return self.conversation is not None and conversation_id == self.conversation.id

    @on(ModelProgress)
    async def _model_progress(self, message: ModelProgress) -> None:
        async with self._in_order(message):
            self.status_bar.state = f"loading {message.event.fraction:.0%}"

    @on(ModelLoaded)
    async def _model_loaded(self, message: ModelLoaded) -> None:
        async with self._in_order(message) as transcript:
            self.status_bar.state = "ready"
            if transcript and self.conversation and not self.store.messages(self.conversation.id):
                # the variant is known now: a fresh conversation starts in the model's own mode
                self.store.set_thinking(self.conversation.id, self.session.variant is not Variant.NO_THINKING)
                self.conversation = self.store.conversation(self.conversation.id)

    @on(ModelFailed)
    async def _model_failed(self, message: ModelFailed) -> None:
        async with self._in_order(message) as transcript:
            self.status_bar.state = "load failed"
            if transcript:
                await transcript.mount(NoticeLine(f"The model could not be loaded: {message.event.message}",
                                                  error=True))

    @on(UserMessageSaved)
    async def _user_saved(self, message: UserMessageSaved) -> None:
        async with self._in_order(message) as transcript:
            saved = message.event.message
            if transcript and self._here(saved.conversation_id):
                versions = self.store.version_count(saved.id)  # 2 or more after an edit
                await transcript.mount(UserMessage(saved.content, saved.id, versions, saved.attachments))
                transcript.scroll_end(animate=False)  # sending means the user wants to follow the answer

    @on(TranscriptRewound)
    async def _rewound(self, message: TranscriptRewound) -> None:
        async with self._in_order(message) as transcript:
            if transcript and self._here(message.event.conversation_id):
                # the replaced turns leave the transcript (the store keeps them: F8 shows them)
                children = list(transcript.children)
                first = next((i for i, w in enumerate(children)
                              if getattr(w, "message_id", 0) >= message.event.from_message_id), len(children))
                await transcript.remove_children(children[first:])

    @on(ContextWasTrimmed)
    async def _context_trimmed(self, message: ContextWasTrimmed) -> None:
        event = message.event
        async with self._in_order(message) as transcript:
            if transcript and self._here(event.conversation_id):
                for old in transcript.query(TrimMarker):
                    await old.remove()
                before = next((w for w in transcript.children
                               if getattr(w, "message_id", 0) == event.from_message_id), None)
                await transcript.mount(TrimMarker(event.dropped_turns, event.n_ctx), before=before)
            self.notify("The conversation is longer than the context: the oldest turns are not sent for this "
                        "answer (marked in the transcript; they stay saved).", severity="warning", timeout=8)

    @on(AnswerBegan)
    async def _answer_began(self, message: AnswerBegan) -> None:
        answer = message.event.message
        async with self._in_order(message) as transcript:
            self.status_bar.thinking_tokens, self.status_bar.budget = 0, answer.thinking_budget
            if transcript and self._here(answer.conversation_id):
                self._live = AssistantMessage()
                self._live.message_id = answer.id
                await transcript.mount(self._live)
            self.status_bar.state = "generating"

    @on(AnswerFinished)
    async def _answer_finished(self, message: AnswerFinished) -> None:
        saved = message.event.message
        async with self._in_order(message) as transcript:
            if transcript and self._live is not None and self._live.message_id == saved.id:
                # the final Markdown re-render changes heights for a moment: keep a following view at the end
                following = transcript.scroll_y >= transcript.max_scroll_y - 1
                self._live.versions = self.store.version_count(saved.id)  # 2 or more if regenerated
                await self._live.finish(saved)
                if following:
                    transcript.scroll_end(animate=False)
            self._live = None
            self.status_bar.state = "tool calls" if saved.tool_calls and self.session.generating else "ready"
            self.set_timer(IDLE_COLLECT_AFTER, self._collect_when_idle)
            if message.event.done is not None:
                self.status_bar.last_speed = message.event.done.tokens_per_second

    @on(NoticeArrived)
    async def _notice(self, message: NoticeArrived) -> None:
        async with self._in_order(message) as transcript:
            if transcript:
                await transcript.mount(NoticeLine(message.event.text, message.event.error))
            if self.conversation:
                self.conversation = self.store.conversation(self.conversation.id)

    @on(DownloadChanged)
    async def _download_changed(self, message: DownloadChanged) -> None:
        job = message.event
        async with self._in_order(message):
            for screen in self.screen_stack:
                if isinstance(screen, DownloadsScreen):
                    screen.show(job)
            if job.state == "done":
                self.notify(f"{job.ref} is ready: F3 and Enter load it. {job.message}", timeout=8)
            elif job.state == "failed":
                self.notify(f"{job.ref}: {job.message}", severity="error", timeout=12)

    def _collect_when_idle(self) -> None:
        if self._live is None:
            gc_pause.release()

