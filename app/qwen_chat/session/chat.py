"""A chat session: the store, an engine and the Qwen3 protocol put together. Plain Python, no UI.

The CLI builds it and hands it to the UI, which attaches its sink and calls `open` (off the UI thread: it reads
the model file and plans memory). Events reach the sink from the engine and writer threads; the sink must only
hand them over. The engine's thread starts on the first load, not in the constructor.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from qwen_chat.config.presets import sampling_for, thinking_budget_for
from qwen_chat.config.tool_settings import ToolSettings, load_tool_settings
from qwen_chat.engines.protocol import (
    ChatEngine,
    Done,
    EngineEvent,
    Failed,
    GenerateRequest,
    Loaded,
    Token,
    Trimmed,
)
from qwen_chat.qwen3.template import (
    Variant,
    apply_mode_command,
    command_of,
    effective_thinking,
    last_soft_switch,
    prompt_opens_thinking,
)
from qwen_chat.qwen3.thinking import StreamText
from qwen_chat.session import commands
from qwen_chat.session.answer_writer import AnswerWriter, save_final
from qwen_chat.session.events import (
    AnswerSaved,
    AnswerStarted,
    ContextTrimmed,
    Notice,
    Rewound,
    SessionEvent,
    ToolLoopEnded,
    UserSaved,
)
from qwen_chat.session.model_side import ModelSide
from qwen_chat.session.prepare import EarlyStop, answer_to_replace, last_switch, prepare, stopped_done
from qwen_chat.session.sources import Server, Source, looks_quantized, remote_engine
from qwen_chat.session.tool_loop import Decision, ToolBox, ToolRound, ToolRunner, functions, new_calls, offered
from qwen_chat.store.database import Store
from qwen_chat.store.records import Attachment, Conversation, Message, StoreError
from qwen_chat.tools.mcp_results import ToolSpec

SAVE_EVERY = 0.5  # seconds between partial-answer saves while streaming
BUSY = "An answer is still being written: press Esc to stop it first."
LOADING = "The model is still loading; your message was not sent."


@dataclass
class _Streaming:
    message_id: int
    conversation_id: int
    text: StreamText = field(default_factory=StreamText)  # the engine's own when it shares it
    last_save: float = 0.0
    turn_starts: tuple[int, ...] = ()  # the first message id of each turn sent, oldest first (for trimming)
    tools: dict[str, ToolSpec] = field(default_factory=dict)  # what this answer was offered, by the model's names
    thinking: bool = False
    rounds: int = 0  # tool rounds before this answer in its turn
    left_out: int = 0  # older turns never read for it (they could not fit): added to what the engine drops


class ChatSession(ModelSide):
    def __init__(self, store: Store, sink: Callable[[SessionEvent], None] | None = None,
                 engine: ChatEngine | None = None, source: Source | None = None,
                 remote: Callable[[Callable[[EngineEvent], None], Server], ChatEngine] = remote_engine,
                 tools: ToolBox | None = None, tool_settings: Callable[[], ToolSettings] = load_tool_settings) -> None:
        """`engine` replaces llama.cpp (the tests' FakeEngine); `remote` builds the engine for an endpoint;
        `tools` are the MCP servers' tools (none: the model is offered no tools); `tool_settings` gives the
        approval rules and loop limits (settings.toml's [tools]; `ask` adds its --allow-tool options)."""
        super().__init__(sink or (lambda event: None), engine, source, remote)
        self.store = store
        self.tools = tools
        self._writer = AnswerWriter(store)  # every store write of a streaming answer: never the engine thread
        self._runner = ToolRunner(store, lambda event: self.sink(event), tools, tool_settings)
        self.context_used = 0
        self._lock = threading.Lock()
        self._streaming: _Streaming | None = None
        self._esc = EarlyStop()  # Esc while an answer is still being prepared
        self._told_switch = False

    @property
    def generating(self) -> bool:
        return self._streaming is not None

    def busy(self) -> str | None:
        """Why nothing that changes the conversation or the model can start now, or None. The one place that
        decides it: the UI asks before sending, switching, deleting or reloading, and the session itself
        refuses a second answer with the same words."""
        return BUSY if self.generating else None

    def stop(self) -> None:
        """Esc: stops the answer being written or prepared, and a tool loop wherever it is (approval, running call)."""
        self._end_unbegun()
        if self.engine is not None:
            self.engine.stop()
        self._runner.stop()

    def _end_unbegun(self) -> None:
        """Esc: an answer the engine has not begun yet ends now, stopped (see session/prepare.py)."""
        answer_id = int(getattr(self._streaming, "message_id", 0))  # one read: the writer thread may clear it
        if self._esc.end(answer_id):
            self._writer.submit(lambda: self._finish(answer_id, stopped_done(answer_id)))

    def decide(self, call_id: int, decision: Decision) -> bool:
        """The user's answer to a ToolApprovalNeeded; False if that call no longer waits."""
        return self._runner.decide(call_id, decision)

    def close(self) -> None:
        self._runner.close()
        if self.engine is not None:
            self.engine.shutdown()
        self._writer.close()

    # -- conversation --

    def new_conversation(self) -> Conversation:
        from qwen_chat.config.settings import load_chat

        thinking = self.variant is not Variant.NO_THINKING
        conversation = self.store.create_conversation(model=self.model_name, enable_thinking=thinking)
        persona = load_chat().persona  # settings.toml [chat] persona: new chats start with its system prompt
        if persona:
            found = next((p for p in self.store.personas() if p.name.lower() == persona.lower()), None)
            if found is None:
                self.sink(Notice(f"settings.toml: chat.persona: there is no persona named {persona!r} (F6 saves "
                                 "one); this chat starts without a system prompt.", error=True))
            else:
                self.store.set_system_prompt(conversation.id, found.prompt)
                conversation = self.store.conversation(conversation.id)
        return conversation

    def thinking_now(self, conversation: Conversation, adding: str | None = None) -> bool:
        """Whether the next answer thinks: the conversation's mode and the last soft switch (in `adding` too)."""
        texts = [conversation.system_prompt] if conversation.system_prompt else []
        texts += last_switch(self.store, conversation.id)
        return effective_thinking(self.variant, conversation.enable_thinking,
                                  texts + ([adding] if adding is not None else []))

    def thinking_budget(self, conversation: Conversation) -> int:
        """The conversation's own budget (set with /budget), else the preset's default; 0 is none."""
        if conversation.thinking_budget is not None:
            return conversation.thinking_budget
        return thinking_budget_for(self.variant, True, self.quantized)

    @property
    def quantized(self) -> bool:
        if self.remote_model is not None:
            return looks_quantized(self.model_name)
        return self.info.quantized if self.info else True

    def send(self, conversation_id: int, text: str, files: tuple[Attachment, ...] = ()) -> Message | None:
        """Handle one line from the user: a command (/think, /no_think, /budget, /context), or a message to
        answer. Returns the stored user message, or None for a command. Raises StoreError if the message could
        not be saved (the caller keeps the text so nothing is lost)."""
        conversation = self.store.conversation(conversation_id)
        if not files and self._command(conversation, text):
            return None
        with self._claim():
            self._check_fits(files)
            self._tell_no_soft_switch(text)
            thinking = self.thinking_now(conversation, adding=text)
            user = self.store.add_user_message(conversation.id, text, "think" if thinking else "no_think", files)
            self.sink(UserSaved(user))
            self._answer(conversation, thinking)
            return user

    def _tell_no_soft_switch(self, text: str) -> None:
        """Qwen3.5 / 3.6 were not trained on /think and /no_think inside a message: say so, once a session."""
        if self.variant is Variant.SWITCHABLE and last_soft_switch(text) is not None and not self._told_switch:
            self._told_switch = True
            self.sink(Notice("This model has no /think or /no_think switch inside a message: there it is plain text. "
                             "Type /think or /no_think alone (or Ctrl+T) to turn thinking on or off."))

    def _check_fits(self, files: tuple[Attachment, ...]) -> None:
        """Files that cannot fit the context are refused before anything is saved, with both sizes."""
        size = sum(f.tokens for f in files)
        room = self.n_ctx - self.context_used if self.n_ctx else 0
        if files and self.n_ctx and size > room:
            names = ", ".join(f.name for f in files)
            raise StoreError(f"{names}: about {size:,} tokens, but the context has room for {max(room, 0):,} of its "
                             f"{self.n_ctx:,} (F7 or /context for a larger one); nothing was sent")

    def _command(self, conversation: Conversation, text: str) -> bool:
        word, argument = commands.split_command(text)
        if word == "/budget":
            reply = commands.budget_reply(argument, self.variant, self.model_name,
                                          self.thinking_budget(conversation), self.remote_model is not None)
            if reply.budget is not None:
                self.store.set_thinking_budget(conversation.id, reply.budget)
            self.sink(reply.notice)
            return True
        if word == "/context":
            self._context_command(argument)
            return True
        command = command_of(text)
        if command is None:
            return False
        change = apply_mode_command(self.variant, conversation.enable_thinking, command == "think")
        if change.changed:
            self.store.set_thinking(conversation.id, change.enable_thinking)
        self.sink(Notice(change.message, error=not change.changed and self.variant is not Variant.HYBRID))
        return True

    def _context_command(self, key: str) -> None:
        from qwen_chat.planning.planner import DoesNotFit
        from qwen_chat.qwen3.context_presets import context_presets

        if not key:
            if self.info is None:
                self.sink(Notice("The server sets the context of an endpoint.", error=True))
                return
            offered = ", ".join(p.key for p in context_presets(self.info, self.variant))
            self.sink(Notice(f"Context: {self.n_ctx:,} tokens. /context KEY reloads with another: {offered}."))
            return
        try:
            chosen = self.change_context(key)
        except (StoreError, ValueError, DoesNotFit) as exc:
            self.sink(Notice(str(exc), error=True))
            return
        yarn = f" with YaRN ×{chosen.yarn_factor}" if chosen.yarn_factor else ""
        self.sink(Notice(f"Reloading with a context of {chosen.n_ctx:,} tokens{yarn}; the conversation stays."))

    def regenerate(self, conversation_id: int) -> None:
        """Answer the last question again; the old answer stays as an earlier version."""
        conversation = self.store.conversation(conversation_id)
        first = answer_to_replace(self.store, conversation_id)
        if first is None:
            raise StoreError("there is no answer to regenerate yet")
        with self._claim():
            self.sink(Rewound(conversation_id, first.id))
            self._answer(conversation, self.thinking_now(conversation), replaces=first.id)

    def edit_and_resend(self, message_id: int, text: str) -> Message:
        """Replace a user message and everything after it (kept as an earlier version), then answer it."""
        old = self.store.message(message_id)
        conversation = self.store.conversation(old.conversation_id)
        with self._claim():
            user = self.store.edit_user_message(message_id, text)
            self.sink(Rewound(conversation.id, message_id))
            self.sink(UserSaved(user))
            self._answer(conversation, self.thinking_now(conversation))
            return user

    @contextlib.contextmanager
    def _claim(self) -> Iterator[None]:
        """One answer at a time; claimed before any slow work, released if starting it fails."""
        if not self.ready or (self.remote_model is None and (self.template is None or self.info is None)):
            raise StoreError(LOADING) from None
        with self._lock:
            busy = self.busy()
            if busy:
                raise StoreError(busy)
            self._streaming = _Streaming(0, 0)
            self._esc.new_turn()
        try:
            yield
        except BaseException:
            with self._lock:
                self._streaming = None
            raise

    def _answer(self, conversation: Conversation, thinking: bool, replaces: int | None = None,
                rounds: int = 0) -> None:
        """Start the answer to the conversation's last user message, or the next step of its tool loop (called
        with the answer slot claimed)."""
        conversation = self.store.conversation(conversation.id)  # /think, budget and persona may have changed
        tools = offered(self.tools, conversation)
        specs = functions(tools)
        prepared = prepare(self.store, conversation, self.template if self.remote_model is None else None, replaces,
                           self._fresh_context, specs, self._runner.settings().result_limit, self.n_ctx, self._esc.turn)
        budget = self.thinking_budget(conversation) if thinking and self.remote_model is None else 0
        sampling = sampling_for(self.variant, thinking, self.quantized, seed=self.seed)
        answer = self.store.start_answer(conversation.id, self.model_name, "think" if thinking else "no_think",
                                         vars(sampling).copy(), replaces=replaces, thinking_budget=budget,
                                         context_from_id=prepared.context_from_id)
        self.sink(AnswerStarted(answer))  # before Esc can see the answer and end it (AnswerSaved comes after)
        with self._lock:
            self._streaming = _Streaming(answer.id, conversation.id, last_save=time.monotonic(), tools=tools,
                                         turn_starts=prepared.turn_starts, thinking=thinking, rounds=rounds,
                                         left_out=prepared.left_out)
        if (built := prepared.built) is None or not self._esc.send(answer.id):
            self._end_unbegun()  # Esc while it was prepared: stopped before its first token
            return
        self._fresh_context = False
        self._engine().generate(GenerateRequest(
            answer.id, built.prompt, sampling, prompt_opens_thinking(built.prompt), built.messages,
            conversation.enable_thinking, budget, built.trim, tools=specs))

    # -- engine thread --

    def _on_engine_event(self, event: EngineEvent) -> None:
        if self._esc.late(event, self.engine):
            return
        if isinstance(event, Token):
            self._on_token(event)
        elif isinstance(event, Trimmed):
            self._on_trimmed(event)
        elif isinstance(event, Done):
            self.context_used = event.context_used
            self._writer.submit(lambda: self._finish(event.request_id, event))
        elif isinstance(event, Failed) and event.request_id is not None:
            failed_id = event.request_id
            self._writer.submit(lambda: self._finish(failed_id, None, event.message))
        elif isinstance(event, Failed):
            if not self._retry_with_fewer_layers(event):
                self.ready = False
                self.sink(event)
        else:
            if isinstance(event, Loaded):
                self._loaded(event)
            self.sink(event)

    def _on_token(self, event: Token) -> None:
        streaming = self._streaming
        if streaming is None or streaming.message_id != event.request_id:
            return
        if event.stream is not None:
            streaming.text = event.stream  # the engine's own copy: nothing to accumulate here
        else:
            streaming.text.append(event.part, event.text)
        self.sink(event)
        now = time.monotonic()
        if now - streaming.last_save >= SAVE_EVERY:
            streaming.last_save = now
            self._writer.save_partial(streaming.message_id, streaming.text)

    def _on_trimmed(self, event: Trimmed) -> None:
        streaming = self._streaming
        if streaming is None or streaming.message_id != event.request_id or not streaming.turn_starts:
            return
        first = streaming.turn_starts[min(event.dropped, len(streaming.turn_starts) - 1)]
        conversation_id, left_out = streaming.conversation_id, streaming.left_out

        def record() -> None:  # on the writer thread
            try:
                self.store.set_context_from(event.request_id, first)
            except StoreError as exc:  # the marker is lost, not the answer
                self.sink(Notice(f"Could not record where the context starts: {exc}", error=True))
            self.sink(ContextTrimmed(conversation_id, event.request_id, first, event.dropped + left_out, event.n_ctx))

        self._writer.submit(record)

    def _finish(self, message_id: int, done: Done | None, error: str = "") -> None:
        """The final save of an answer, with retries (on the writer thread), then AnswerSaved."""
        streaming = self._streaming
        streamed = streaming.text if streaming else StreamText()
        saved = save_final(self.store, message_id, done, streamed, error, self.sink)
        if saved is not None and done is not None and done.tool_calls and streaming is not None:
            saved = self._with_calls(saved, done, streaming)
            if done.finish == "stop":  # the loop goes on: the slot stays held until it ends
                self.sink(AnswerSaved(saved, done))
                self._runner.submit(self._round(saved, streaming))
                return
        with self._lock:
            self._streaming = None
        if saved is not None:
            self.sink(AnswerSaved(saved, done))
            if done is None:
                self.sink(Notice(error, error=True))

    def _with_calls(self, saved: Message, done: Done, streaming: _Streaming) -> Message:
        try:
            self.store.add_tool_calls(saved.id, new_calls(saved.id, done, streaming.tools))
            return self.store.message(saved.id)
        except StoreError as exc:
            self.sink(Notice(f"The tool calls could not be saved, so none of them ran: {exc}", error=True))
            return saved

    def _round(self, saved: Message, streaming: _Streaming) -> ToolRound:
        conversation_id, thinking, rounds = streaming.conversation_id, streaming.thinking, streaming.rounds + 1

        def next_answer() -> None:
            try:
                self._answer(self.store.conversation(conversation_id), thinking, rounds=rounds)
            except StoreError as exc:
                end(f"The next step of the tool loop could not start: {exc}")

        def end(reason: str) -> None:
            with self._lock:
                self._streaming = None
            if reason:
                self.sink(Notice(reason, error=not reason.startswith("Stopped")))
            self.sink(ToolLoopEnded(conversation_id, reason))

        with self._lock:
            self._streaming = _Streaming(0, conversation_id)  # between answers: still busy, nothing streams
        return ToolRound(conversation_id, saved, streaming.tools, rounds, next_answer, end)
