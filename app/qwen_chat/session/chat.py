"""A chat session: the store, the engine and the Qwen3 protocol put together. Plain Python, no UI.

The UI calls `send` (from a worker thread: it writes to SQLite) and receives events through `sink`, which
is called on the engine thread and must only hand the event over (the TUI appends it to a queue).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from qwen_chat.config.presets import sampling_for, thinking_budget_for
from qwen_chat.engines.llama import Engine
from qwen_chat.engines.protocol import (
    ChatEngine,
    Done,
    EngineEvent,
    Failed,
    GenerateRequest,
    Loaded,
    LoadProgress,
    LoadRequest,
    Token,
    Trim,
    Trimmed,
)
from qwen_chat.models import fit_memory
from qwen_chat.models.gguf_files import ModelInfo, read_model_info
from qwen_chat.models.planner import Plan, arch_from_info, candidate_from_info, plan
from qwen_chat.qwen3.sampling import MAX_THINKING_BUDGET
from qwen_chat.qwen3.template import (
    ChatTemplate,
    Turn,
    Variant,
    apply_mode_command,
    build_prompt,
    command_of,
    effective_thinking,
    last_soft_switch,
    prompt_opens_thinking,
    template_messages,
)
from qwen_chat.qwen3.thinking import StreamText
from qwen_chat.session.answer_writer import AnswerWriter
from qwen_chat.store.database import Conversation, Message, Stats, Store, StoreError
from qwen_chat.system.hardware import Machine, detect

SAVE_EVERY = 0.5  # seconds between partial-answer saves while streaming


@dataclass(frozen=True)
class Notice:
    """Something to tell the user that is not a model message (mode changes, refusals)."""

    text: str
    error: bool = False


@dataclass(frozen=True)
class UserSaved:
    """The user's message is on disk; it reaches the UI through the same queue as the answer, in order."""

    message: Message


@dataclass(frozen=True)
class AnswerStarted:
    message: Message


@dataclass(frozen=True)
class Rewound:
    """An edit or a regeneration: from this message on, the transcript is replaced (the old turns are kept
    in the store as an earlier version)."""

    conversation_id: int
    from_message_id: int


@dataclass(frozen=True)
class ContextTrimmed:
    """The oldest turns no longer fit: from `from_message_id` on is what the model sees for this answer."""

    conversation_id: int
    answer_id: int
    from_message_id: int
    dropped_turns: int
    n_ctx: int


@dataclass(frozen=True)
class AnswerSaved:
    """The final state of an answer is on disk."""

    message: Message
    done: Done | None


SessionEvent = EngineEvent | Notice | UserSaved | AnswerStarted | AnswerSaved | Rewound | ContextTrimmed


@dataclass
class _Streaming:
    message_id: int
    conversation_id: int
    text: StreamText = dataclasses.field(default_factory=StreamText)  # the engine's own when it shares it
    last_save: float = 0.0
    turn_starts: tuple[int, ...] = ()  # the first message id of each turn sent, oldest first (for trimming)


class ChatSession:
    def __init__(self, store: Store, sink: Callable[[SessionEvent], None], engine: ChatEngine | None = None) -> None:
        self.store = store
        self.sink = sink
        self._writer = AnswerWriter(store)  # every store write of a streaming answer: never the engine thread
        self.engine: ChatEngine = engine or Engine(self._on_engine_event)
        if engine is not None:
            engine.on_event = self._on_engine_event
        self.engine.start()
        self.info: ModelInfo | None = None
        self.remote_model: str | None = None  # set when talking to an HTTP endpoint
        self.template: ChatTemplate | None = None
        self.plan: Plan | None = None
        self._load_request: LoadRequest | None = None
        self._fit_key = ""
        self._retried = False
        self.n_ctx = 0
        self.gpu_layers: int | None = None  # as actually loaded (after any retry with fewer layers)
        self.ready = False
        self.context_used = 0
        self._lock = threading.Lock()
        self._streaming: _Streaming | None = None
        self._fresh_context = True
        self.planner_chose_context = True

    # -- model --

    @property
    def model_name(self) -> str:
        if self.remote_model:
            return self.remote_model
        return self.info.path.name if self.info else ""

    @property
    def variant(self) -> Variant:
        if self.remote_model is not None:
            return Variant.HYBRID  # a served Qwen3: thinking switches through chat_template_kwargs
        return self.template.variant if self.template else Variant.NO_THINKING

    def connect(self, base_url: str, api_key: str | None = None, model: str | None = None) -> None:
        """Use an OpenAI-compatible server (llama-server, vLLM, SGLang) instead of a local file."""
        from qwen_chat.engines.http import RemoteEngine

        self.engine.shutdown()
        self.engine = RemoteEngine(self._on_engine_event, base_url, api_key, model).start()
        self.remote_model = model or ""
        self.info, self.template, self.plan, self.ready = None, None, None, False
        self.engine.load(LoadRequest(Path(base_url), 0))

    def load_model(self, path: Path, n_ctx: int | None = None, machine: Machine | None = None,
                   context: str = "auto") -> Plan:
        """Check the file, plan memory, then queue the load. Raises ModelFileError or DoesNotFit.

        Without `n_ctx`, `context` names a preset (settings.toml [chat] context); "auto" lets the planner choose.
        """
        from qwen_chat.qwen3.context_presets import preset_for

        info = read_model_info(path)
        template = ChatTemplate(info.chat_template, info.bos_token, info.eos_token)
        _ = template.variant  # a broken template fails here, before the load, with the model named
        if n_ctx is None and context != "auto":
            preset = preset_for(context, info, template.variant)
            if preset is None:
                self.sink(Notice(f"settings.toml: chat.context: {path.name} does not offer {context!r}; "
                                 "the planner chooses the context instead.", error=True))
            else:
                n_ctx = preset.n_ctx
        self.planner_chose_context = n_ctx is None
        machine = machine or detect()
        chosen = plan_for_file(info, template.variant, machine, n_ctx)
        self._fit_key = fit_memory.key(machine, info.path, info.size_bytes)
        self._retried = False
        remembered = fit_memory.remembered_layers(self._fit_key)
        n_gpu = chosen.n_gpu_layers
        if remembered is not None and n_gpu != 0 and (n_gpu < 0 or remembered < n_gpu):
            n_gpu = remembered  # a load with more layers failed for memory here before
        self.info, self.template, self.plan, self.ready = info, template, chosen, False
        self._load_request = LoadRequest(
            info.path, chosen.n_ctx, n_gpu, n_cpu_moe=chosen.n_cpu_moe, kv_type=chosen.kv_type,
            flash_attn=chosen.flash_attn, yarn_factor=chosen.yarn_factor, yarn_orig_ctx=32768)
        self.engine.load(self._load_request)
        return chosen

    def change_context(self, key: str, machine: Machine | None = None) -> Plan:
        """Re-plan for a context preset ("auto", "native", "64k", "128k", "256k") and reload the model in the
        background; the conversation stays. Raises StoreError (cannot now), ValueError (not offered) or
        DoesNotFit (memory), each with the reason."""
        from qwen_chat.qwen3.context_presets import context_presets, preset_for

        if self.info is None or self.template is None:
            raise StoreError("the context is set by the server for an endpoint; load a local model to change it")
        if self.generating:
            raise StoreError("an answer is still being written; press Esc to stop it first")
        preset = preset_for(key, self.info, self.variant)
        if preset is None:
            offered = ", ".join(p.key for p in context_presets(self.info, self.variant))
            raise ValueError(f"{self.info.path.name} does not offer the context {key!r}; it offers: {offered}")
        return self.load_model(self.info.path, preset.n_ctx, machine)

    @property
    def generating(self) -> bool:
        return self._streaming is not None

    def stop(self) -> None:
        self.engine.stop()

    def close(self) -> None:
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

    def turns(self, conversation: Conversation) -> list[Turn]:
        """History for the prompt: answers only, no thinking; empty answers (stopped while thinking) left out."""
        turns = [Turn("system", conversation.system_prompt)] if conversation.system_prompt else []
        return turns + [Turn(m.role, m.content) for m in _sendable(self.store.messages(conversation.id))]

    def thinking_now(self, conversation: Conversation) -> bool:
        texts = [t.content for t in self.turns(conversation) if t.role in ("user", "system")]
        return effective_thinking(self.variant, conversation.enable_thinking, texts)

    def thinking_budget(self, conversation: Conversation) -> int:
        """The conversation's own budget (set with /budget), else the preset's default; 0 is none."""
        if conversation.thinking_budget is not None:
            return conversation.thinking_budget
        return thinking_budget_for(self.variant, True, self.quantized)

    @property
    def quantized(self) -> bool:
        if self.remote_model is not None:
            return _looks_quantized(self.model_name)
        return self.info.quantized if self.info else True

    def send(self, conversation_id: int, text: str) -> Message | None:
        """Handle one line from the user: a command (/think, /no_think, /budget), or a message to answer.

        Returns the stored user message, or None for a command. Raises StoreError if the message could not
        be saved (the caller keeps the text so nothing is lost).
        """
        conversation = self.store.conversation(conversation_id)
        word, _, argument = text.strip().partition(" ")
        if word.lower() == "/budget":
            self._budget_command(conversation, argument.strip())
            return None
        if word.lower() == "/context":
            self._context_command(argument.strip())
            return None
        command = command_of(text)
        if command is not None:
            change = apply_mode_command(self.variant, conversation.enable_thinking, command == "think")
            if change.changed:
                self.store.set_thinking(conversation_id, change.enable_thinking)
            self.sink(Notice(change.message, error=not change.changed and self.variant is not Variant.HYBRID))
            return None
        with self._claim():
            thinking = effective_thinking(
                self.variant, conversation.enable_thinking,
                [t.content for t in self.turns(conversation) if t.role in ("user", "system")] + [text])
            user = self.store.add_user_message(conversation.id, text, "think" if thinking else "no_think")
            self.sink(UserSaved(user))
            self._answer(conversation, thinking)
            return user

    def regenerate(self, conversation_id: int) -> None:
        """Answer the last question again; the old answer stays as an earlier version."""
        conversation = self.store.conversation(conversation_id)
        last = next((m for m in reversed(self.store.messages(conversation_id)) if m.role == "assistant"), None)
        if last is None:
            raise StoreError("there is no answer to regenerate yet")
        with self._claim():
            self.sink(Rewound(conversation_id, last.id))
            self._answer(conversation, self.thinking_now(conversation), replaces=last.id)

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
            raise StoreError("the model is still loading; your message was not sent") from None
        with self._lock:
            if self._streaming is not None:
                raise StoreError("an answer is still being written; press Esc to stop it first")
            self._streaming = _Streaming(0, 0)
        try:
            yield
        except BaseException:
            with self._lock:
                self._streaming = None
            raise

    def _budget_command(self, conversation: Conversation, argument: str) -> None:
        if self.variant is Variant.NO_THINKING:
            self.sink(Notice(f"{self.model_name or 'This model'} does not think, so a thinking budget does not "
                             "apply.", error=True))
            return
        word = argument.lower().replace(",", "").replace("_", "")
        if not word:
            budget = self.thinking_budget(conversation)
            self.sink(Notice(f"Thinking budget: {budget:,} tokens." if budget else
                             "No thinking budget. Set one with /budget N (tokens), e.g. /budget 2048."))
            return
        if word in ("off", "none", "0"):
            budget = 0
        elif word.isdigit() and int(word) <= MAX_THINKING_BUDGET:
            budget = int(word)
        else:
            self.sink(Notice(f"/budget takes a number of tokens from 1 to {MAX_THINKING_BUDGET:,}, or off (got "
                             f"{argument!r}).", error=True))
            return
        self.store.set_thinking_budget(conversation.id, budget)
        if self.remote_model is not None and budget:
            self.sink(Notice(f"Thinking budget set to {budget:,} tokens, but it only applies to local models: "
                             "a server caps thinking with its own settings (llama-server --reasoning-budget).",
                             error=True))
            return
        self.sink(Notice(f"Thinking budget: {budget:,} tokens; after that the model is told to answer."
                         if budget else "Thinking budget off: the model thinks as long as it needs."))

    def _context_command(self, key: str) -> None:
        from qwen_chat.models.planner import DoesNotFit
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

    def _answer(self, conversation: Conversation, thinking: bool, replaces: int | None = None) -> None:
        """Start the answer to the conversation's last user message (called with the answer slot claimed)."""
        conversation = self.store.conversation(conversation.id)  # /think, budget and persona may have changed
        mode = "think" if thinking else "no_think"
        rows = _sendable(self.store.messages(conversation.id))
        if replaces is not None:
            rows = [m for m in rows if m.id < replaces]
        start = next((m.context_from_id for m in reversed(rows) if m.role == "assistant"), None)
        if self._fresh_context:
            start, self._fresh_context = None, False  # the cache is empty anyway: try the whole conversation
        if start is not None:
            rows = [m for m in rows if m.id >= start]  # what did not fit before stays out: the KV prefix holds
        *history, current = rows
        turn_groups: list[list[Message]] = []
        for m in history:
            if m.role == "user" or not turn_groups:
                turn_groups.append([])
            turn_groups[-1].append(m)
        system = [Turn("system", conversation.system_prompt)] if conversation.system_prompt else []

        def turns_without(dropped: int) -> list[Turn]:
            kept = [Turn(m.role, m.content) for group in turn_groups[dropped:] for m in group]
            return [*system, *kept, Turn("user", current.content)]

        budget = self.thinking_budget(conversation) if thinking and self.remote_model is None else 0
        messages = template_messages(turns_without(0))
        trim = None
        if self.remote_model is not None:
            prompt = ""
            if not conversation.enable_thinking and last_soft_switch(current.content) is None:
                messages[-1] = {**messages[-1], "content": f"{current.content} /no_think"}  # servers w/o kwargs
        else:
            template = self.template
            assert template is not None
            enable = conversation.enable_thinking
            prompt = build_prompt(template, turns_without(0), enable_thinking=enable)
            trim = Trim(lambda dropped: build_prompt(template, turns_without(dropped), enable_thinking=enable),
                        len(turn_groups) + 1)
        sampling = sampling_for(self.variant, thinking, self.quantized)
        answer = self.store.start_answer(conversation.id, self.model_name, mode, dataclasses.asdict(sampling),
                                         replaces=replaces, thinking_budget=budget, context_from_id=start)
        with self._lock:
            self._streaming = _Streaming(answer.id, conversation.id, last_save=time.monotonic(),
                                         turn_starts=tuple(g[0].id for g in turn_groups) + (current.id,))
        self.sink(AnswerStarted(answer))
        self.engine.generate(GenerateRequest(answer.id, prompt, sampling, prompt_opens_thinking(prompt),
                                             tuple(messages), conversation.enable_thinking, budget, trim))

    # -- engine thread --

    def _on_engine_event(self, event: EngineEvent) -> None:
        if isinstance(event, Loaded):
            if self.remote_model is not None:
                self.remote_model = str(event.model_path)  # the served model's id
            self.ready = True
            self._fresh_context = True  # a new context may hold turns an earlier one had to leave out
            self.context_used = 0
            self.n_ctx = event.n_ctx
            self.gpu_layers = event.n_gpu_layers
            if self._retried:
                fit_memory.remember_layers(self._fit_key, event.n_gpu_layers)
        elif isinstance(event, Failed) and event.request_id is None and self._retry_with_fewer_layers(event):
            return
        elif isinstance(event, Token):
            self._on_token(event)
            return
        elif isinstance(event, Trimmed):
            self._on_trimmed(event)
            return
        elif isinstance(event, Done):
            self.context_used = event.context_used
            self._writer.submit(lambda: self._finish(event.request_id, event))
            return
        elif isinstance(event, Failed) and event.request_id is not None:
            self._writer.submit(lambda: self._finish(event.request_id, None, event.message))
            return
        elif isinstance(event, Failed):
            self.ready = False
        self.sink(event)

    def _retry_with_fewer_layers(self, failed: Failed) -> bool:
        """A GPU load that failed (llama.cpp ran out of memory) is retried with one layer fewer."""
        request, info = self._load_request, self.info
        if request is None or info is None or request.n_gpu_layers == 0 or "cancelled" in failed.message:
            return False
        layers = info.block_count + 1 if request.n_gpu_layers < 0 else request.n_gpu_layers
        self._load_request = dataclasses.replace(request, n_gpu_layers=layers - 1)
        self._retried = True
        self.sink(Notice(f"Loading with {layers} GPU layers failed; trying {layers - 1}."))
        self.engine.load(self._load_request)
        return True

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
        conversation_id = streaming.conversation_id

        def record() -> None:  # on the writer thread
            try:
                self.store.set_context_from(event.request_id, first)
            except StoreError as exc:  # the marker is lost, not the answer
                self.sink(Notice(f"Could not record where the context starts: {exc}", error=True))
            self.sink(ContextTrimmed(conversation_id, event.request_id, first, event.dropped, event.n_ctx))

        self._writer.submit(record)

    def _finish(self, message_id: int, done: Done | None, error: str = "") -> None:
        """The final save of an answer, with retries (on the writer thread), then AnswerSaved."""
        streaming = self._streaming
        thinking = done.thinking if done else (streaming.text.thinking if streaming else "")
        answer = done.answer if done else (streaming.text.answer if streaming else "")
        if done is None:
            status, closed, stats = "failed", False, Stats()
        else:
            status = {"stop": "complete", "length": "stopped", "stopped": "stopped"}.get(done.finish, "complete")
            if done.finish == "length":
                error = f"reached the output limit ({done.completion_tokens:,} tokens)"
            closed = done.thinking_closed
            stats = Stats(done.prompt_tokens, done.completion_tokens, done.prompt_seconds,
                          done.generation_seconds, done.tokens_per_second)
        for attempt in range(5):
            try:
                self.store.finish_answer(message_id, status, thinking, answer, closed, stats, error,
                                         thinking_cut_at=done.thinking_cut_at if done else None)
                break
            except StoreError as exc:
                if attempt == 4:
                    self.sink(Notice(f"The answer could not be saved: {exc}", error=True))
                time.sleep(0.2 * (attempt + 1))
        with self._lock:
            self._streaming = None
        try:
            message = self.store.message(message_id)
        except StoreError as exc:
            self.sink(Notice(str(exc), error=True))
            return
        self.sink(AnswerSaved(message, done))
        if done is None:
            self.sink(Notice(error, error=True))


def _sendable(messages: list[Message]) -> list[Message]:
    """What the model sees of the history: questions and answers; empty answers (stopped while thinking) and
    failed ones without text are left out."""
    return [m for m in messages if m.role == "user" or (m.role == "assistant" and m.content)]


def _looks_quantized(model_id: str) -> bool:
    """A served GGUF (llama-server) is quantized; vLLM/SGLang usually serve BF16/FP8 checkpoints."""
    name = model_id.lower()
    return "gguf" in name or bool(re.search(r"\bq\d|iq\d|-q\d", name))


def plan_for_file(info: ModelInfo, variant: Variant, machine: Machine, n_ctx: int | None) -> Plan:
    """Qwen3 hybrid GGUFs from 4B up say 40,960 positions; YaRN ×2/×4 over the native 32,768 goes beyond."""
    hybrid_yarn = variant is Variant.HYBRID and info.context_length == 40960 and info.block_count > 28
    arch = arch_from_info(info, (2, 4) if hybrid_yarn else (), 32768 if hybrid_yarn else None)
    return plan(arch, [candidate_from_info(info)], machine, n_ctx)


__all__ = ["AnswerSaved", "AnswerStarted", "ChatSession", "ContextTrimmed", "LoadProgress", "Notice", "Rewound",
           "SessionEvent", "UserSaved"]
