"""A chat session: the store, the model side (session.model: the model or server, its engine and its load) and
the Qwen3 protocol put together. Plain Python, no UI.

The CLI builds it and hands it to the UI, which attaches its sink and calls `open` (off the UI thread: it reads
the model file and plans memory, unless the CLI did that already). Events reach the sink from the engine and
writer threads; the sink must only hand them over. The engine's thread starts on the first load, not in the
constructor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from qwen_chat.config.engine_settings import load_engine_settings
from qwen_chat.config.presets import sampling_for, thinking_budget_for
from qwen_chat.config.tool_settings import ToolSettings, load_tool_settings
from qwen_chat.engines.protocol import ChatEngine, Done, EngineEvent, Failed, GenerateRequest, Token, Trimmed
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
from qwen_chat.session.model_side import ModelSide, RemoteFactory
from qwen_chat.session.prepare import EarlyStop, Streaming, answer_to_replace, last_switch, prepare, stopped_done
from qwen_chat.session.sources import Source, remote_engine
from qwen_chat.session.tool_loop import Decision, ToolBox, ToolRound, ToolRunner, functions, new_calls, offered
from qwen_chat.store.database import Store
from qwen_chat.store.records import Attachment, Conversation, Message, StoreError

if TYPE_CHECKING:
    from pathlib import Path

    from qwen_chat.planning.planner import Plan
    from qwen_chat.system.hardware import Machine

SAVE_EVERY = 0.5  # seconds between partial-answer saves while streaming
BUSY = "An answer is still being written: press Esc to stop it first."
LOADING = "The model is still loading; your message was not sent."


class ChatSession:
    def __init__(self, store: Store, sink: Callable[[SessionEvent], None] | None = None,
                 engine: ChatEngine | None = None, source: Source | None = None,
                 remote: RemoteFactory = remote_engine,
                 tools: ToolBox | None = None, tool_settings: Callable[[], ToolSettings] = load_tool_settings) -> None:
        """`engine` replaces llama.cpp (the tests' FakeEngine); `remote` builds the engine for an endpoint;
        `tools` are the MCP servers' tools (none: the model is offered no tools); `tool_settings` gives the
        approval rules and loop limits (settings.toml's [tools]; `ask` adds its --allow-tool options)."""
        self.sink: Callable[[SessionEvent], None] = sink or (lambda event: None)
        # the UI sets `sink` after this, so the model side is handed a call that looks it up each time
        self.model = ModelSide(lambda event: self.sink(event), self._on_engine_event, source,
                               (lambda on_event: engine) if engine is not None else None, remote)
        self.store = store
        self.tools = tools
        self.seed: int | None = None  # `--seed`: every answer's sampling seed, above the preset's and [chat]'s
        self.context_hint: str | None = None  # a message that cannot fit even alone: what to do (`ask`: --ctx N)
        # speculative decoding for the next answers (F5 sets it, no reload; a draft model loads only if on at load)
        self.drafting = load_engine_settings().speculative
        self._writer = AnswerWriter(store)  # every store write of a streaming answer: never the engine thread
        self._runner = ToolRunner(store, lambda event: self.sink(event), tools, tool_settings)
        self._lock = threading.Lock()
        self._streaming: Streaming | None = None
        self._esc = EarlyStop()  # Esc while an answer is still being prepared
        self._told_switch = False

    # -- the model side --

    @property
    def source(self) -> Source | None:
        return self.model.source

    @source.setter
    def source(self, source: Source | None) -> None:
        """What the next `open` loads (F3 sets it)."""
        self.model.source = source

    def open(self, context: str = "auto") -> Plan | None:
        return self.model.open(context)

    def load_model(self, path: Path, n_ctx: int | None = None, machine: Machine | None = None,
                   context: str = "auto") -> Plan:
        return self.model.load_model(path, n_ctx, machine, context)

    def connect(self, base_url: str, api_key: str | None = None, model: str | None = None) -> None:
        self.model.connect(base_url, api_key, model)

    def change_context(self, key: str, machine: Machine | None = None) -> Plan:
        """ModelSide.change_context, refused while an answer is written."""
        return self.model.change_context(key, machine, self.busy())

    # -- the conversation --

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
        if self.model.engine is not None:
            self.model.engine.stop()
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
        self.model.close()
        self._writer.close()

    def new_conversation(self) -> Conversation:
        from qwen_chat.config.settings import load_chat

        thinking = self.model.variant is not Variant.NO_THINKING
        conversation = self.store.create_conversation(model=self.model.model_name, enable_thinking=thinking)
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
        # only a hybrid model with thinking on follows switches, and one in `adding` (the newest) decides alone:
        # otherwise the history is not read for them
        if (self.model.variant is Variant.HYBRID and conversation.enable_thinking
                and (adding is None or last_soft_switch(adding) is None)):
            texts += last_switch(self.store, conversation.id)
        return effective_thinking(self.model.variant, conversation.enable_thinking,
                                  texts + ([adding] if adding is not None else []))

    def thinking_budget(self, conversation: Conversation) -> int:
        """The conversation's own budget (set with /budget), else the preset's default; 0 is none."""
        if conversation.thinking_budget is not None:
            return conversation.thinking_budget
        return thinking_budget_for(self.model.variant, True, self.model.quantized)

    def send(self, conversation_id: int, text: str, files: tuple[Attachment, ...] = (), *,
             plain: bool = False, thinking: bool | None = None) -> Message | None:
        """Handle one line from the user: a command (/think, /no_think, /budget, /context; never when `plain`:
        `ask` sends every question as it is), or a message to answer. Returns the stored user message, or None
        for a command. Raises StoreError if the message could not be saved (the caller keeps the text so nothing
        is lost). `thinking`: the thinking rule's answer when the caller keeps the history (a window's
        OpenConversation does), so the history is not searched again for a soft switch."""
        conversation = self.store.conversation(conversation_id)
        if not plain and not files and self._command(conversation, text):
            return None
        with self._claim():
            self.model.check_room(files)
            self._tell_no_soft_switch(text)
            if thinking is None:
                thinking = self.thinking_now(conversation, adding=text)
            user = self.store.add_user_message(conversation.id, text, "think" if thinking else "no_think", files)
            self.sink(UserSaved(user))
            self._answer(conversation, thinking)
            return user

    def _tell_no_soft_switch(self, text: str) -> None:
        """Qwen3.5 / 3.6 were not trained on /think and /no_think inside a message: say so, once a session."""
        if self.model.variant is Variant.SWITCHABLE and last_soft_switch(text) is not None and not self._told_switch:
            self._told_switch = True
            self.sink(Notice("This model has no /think or /no_think switch inside a message: there it is plain text. "
                             "Type /think or /no_think alone (or Ctrl+T) to turn thinking on or off."))

    def _command(self, conversation: Conversation, text: str) -> bool:
        word, argument = commands.split_command(text)
        if word == "/budget":
            reply = commands.budget_reply(argument, self.model.variant, self.model.model_name,
                                          self.thinking_budget(conversation), self.model.remote_model is not None)
            if reply.budget is not None:
                self.store.set_thinking_budget(conversation.id, reply.budget)
            self.sink(reply.notice)
            return True
        if word == "/context":
            self.sink(self.model.context_command(argument, self.busy()))
            return True
        command = command_of(text)
        if command is None:
            return False
        change = apply_mode_command(self.model.variant, conversation.enable_thinking, command == "think")
        if change.changed:
            self.store.set_thinking(conversation.id, change.enable_thinking)
        self.sink(Notice(change.message, error=not change.changed and self.model.variant is not Variant.HYBRID))
        return True

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
        model = self.model
        if not model.ready or (model.remote_model is None and (model.template is None or model.info is None)):
            raise StoreError(LOADING) from None
        with self._lock:
            busy = self.busy()
            if busy:
                raise StoreError(busy)
            self._streaming = Streaming(0, 0)
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
        specs, model = functions(tools), self.model
        local = model.remote_model is None
        prepared = prepare(self.store, conversation, model.template if local else None, replaces, model.fresh_context,
                           specs, self._runner.settings().result_limit, model.n_ctx, self._esc.turn)
        budget = self.thinking_budget(conversation) if thinking and local else 0
        sampling = sampling_for(model.variant, thinking, model.quantized, seed=self.seed)
        answer = self.store.start_answer(conversation.id, model.model_name, "think" if thinking else "no_think",
                                         vars(sampling).copy(), replaces=replaces, thinking_budget=budget,
                                         context_from_id=prepared.context_from_id)
        self.sink(AnswerStarted(answer))  # before Esc can see the answer and end it (AnswerSaved comes after)
        with self._lock:
            self._streaming = Streaming(answer.id, conversation.id, last_save=time.monotonic(), tools=tools,
                                         turn_starts=prepared.turn_starts, thinking=thinking, rounds=rounds,
                                         left_out=prepared.left_out)
        if (built := prepared.built) is None or not self._esc.send(answer.id):
            self._end_unbegun()  # Esc while it was prepared: stopped before its first token
            return
        model.fresh_context = False
        request = GenerateRequest(answer.id, built.prompt, sampling, prompt_opens_thinking(built.prompt),
                                  built.messages, conversation.enable_thinking, budget, built.trim, tools=specs,
                                  drafting=self.drafting)
        if self.context_hint is not None:
            request = dataclasses.replace(request, context_hint=self.context_hint)
        model.loaded_engine().generate(request)

    # -- engine thread --

    def _on_engine_event(self, event: EngineEvent) -> None:
        """The engine's events after the model side kept the loads' (Loaded, a failed load and its retries)."""
        if self._esc.late(event, self.model.engine):
            return
        if isinstance(event, Token):
            self._on_token(event)
        elif isinstance(event, Trimmed):
            self._on_trimmed(event)
        elif isinstance(event, Done):
            self.model.context_used = event.context_used
            self._writer.submit(lambda: self._finish(event.request_id, event))
        elif isinstance(event, Failed) and event.request_id is not None:
            failed_id = event.request_id
            self._writer.submit(lambda: self._finish(failed_id, None, event.message))
        else:  # a load's progress and end, which the UI shows
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
                self.sink(AnswerSaved(saved, done, ends_turn=False))
                self._runner.submit(self._round(saved, streaming))
                return
        with self._lock:
            self._streaming = None
        if saved is not None:
            self.sink(AnswerSaved(saved, done))
            if done is None:
                self.sink(Notice(error, error=True))

    def _with_calls(self, saved: Message, done: Done, streaming: Streaming) -> Message:
        try:
            self.store.add_tool_calls(saved.id, new_calls(saved.id, done, streaming.tools))
            return self.store.message(saved.id)
        except StoreError as exc:
            self.sink(Notice(f"The tool calls could not be saved, so none of them ran: {exc}", error=True))
            return saved

    def _round(self, saved: Message, streaming: Streaming) -> ToolRound:
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
            self._streaming = Streaming(0, conversation_id)  # between answers: still busy, nothing streams
        return ToolRound(conversation_id, saved, streaming.tools, rounds, next_answer, end)
