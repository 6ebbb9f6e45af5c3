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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import fit_memory
from .engine import (
    ChatEngine,
    Done,
    Engine,
    EngineEvent,
    Failed,
    GenerateRequest,
    Loaded,
    LoadProgress,
    LoadRequest,
    Token,
)
from .gguf_files import ModelInfo, read_model_info
from .hardware import Machine, detect
from .planner import Plan, arch_from_info, candidate_from_info, plan
from .presets import sampling_for
from .qwen3 import (
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
from .store import Conversation, Message, Stats, Store, StoreError

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
class AnswerSaved:
    """The final state of an answer is on disk."""

    message: Message
    done: Done | None


SessionEvent = EngineEvent | Notice | UserSaved | AnswerStarted | AnswerSaved


@dataclass
class _Streaming:
    message_id: int
    conversation_id: int
    thinking: str = ""
    answer: str = ""
    last_save: float = 0.0


class ChatSession:
    def __init__(self, store: Store, sink: Callable[[SessionEvent], None], engine: ChatEngine | None = None) -> None:
        self.store = store
        self.sink = sink
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
        from .remote_engine import RemoteEngine

        self.engine.shutdown()
        self.engine = RemoteEngine(self._on_engine_event, base_url, api_key, model).start()
        self.remote_model = model or ""
        self.info, self.template, self.plan, self.ready = None, None, None, False
        self.engine.load(LoadRequest(Path(base_url), 0))

    def load_model(self, path: Path, n_ctx: int | None = None, machine: Machine | None = None) -> Plan:
        """Check the file, plan memory, then queue the load. Raises ModelFileError or DoesNotFit."""
        info = read_model_info(path)
        template = ChatTemplate(info.chat_template, info.bos_token, info.eos_token)
        _ = template.variant  # a broken template fails here, before the load, with the model named
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

    @property
    def generating(self) -> bool:
        return self._streaming is not None

    def stop(self) -> None:
        self.engine.stop()

    def close(self) -> None:
        self.engine.shutdown()

    # -- conversation --

    def new_conversation(self) -> Conversation:
        thinking = self.variant is not Variant.NO_THINKING
        return self.store.create_conversation(model=self.model_name, enable_thinking=thinking)

    def turns(self, conversation: Conversation) -> list[Turn]:
        """History for the prompt: answers only, no thinking; empty answers (stopped while thinking) left out."""
        turns = [Turn("system", conversation.system_prompt)] if conversation.system_prompt else []
        for m in self.store.messages(conversation.id):
            if m.role == "user" or (m.role == "assistant" and m.content):
                turns.append(Turn(m.role, m.content))
        return turns

    def thinking_now(self, conversation: Conversation) -> bool:
        texts = [t.content for t in self.turns(conversation) if t.role in ("user", "system")]
        return effective_thinking(self.variant, conversation.enable_thinking, texts)

    def send(self, conversation_id: int, text: str) -> Message | None:
        """Handle one line from the user: a mode command, or a message to answer.

        Returns the stored user message, or None for a command. Raises StoreError if the message could not
        be saved (the caller keeps the text so nothing is lost).
        """
        command = command_of(text)
        conversation = self.store.conversation(conversation_id)
        if command is not None:
            change = apply_mode_command(self.variant, conversation.enable_thinking, command == "think")
            if change.changed:
                self.store.set_thinking(conversation_id, change.enable_thinking)
            self.sink(Notice(change.message, error=not change.changed and self.variant is not Variant.HYBRID))
            return None
        if not self.ready or (self.remote_model is None and (self.template is None or self.info is None)):
            raise StoreError("the model is still loading; your message was not sent") from None
        with self._lock:
            if self._streaming is not None:
                raise StoreError("an answer is still being written; press Esc to stop it first")
            self._streaming = _Streaming(0, conversation_id)  # claimed before any slow work
        try:
            return self._start_turn(conversation, text)
        except BaseException:
            with self._lock:
                self._streaming = None
            raise

    def _start_turn(self, conversation: Conversation, text: str) -> Message:
        thinking = effective_thinking(
            self.variant, conversation.enable_thinking,
            [t.content for t in self.turns(conversation) if t.role in ("user", "system")] + [text])
        mode = "think" if thinking else "no_think"
        user = self.store.add_user_message(conversation.id, text, mode)
        self.sink(UserSaved(user))
        turns = self.turns(conversation)
        messages = template_messages(turns)
        if self.remote_model is not None:
            prompt, quantized = "", _looks_quantized(self.model_name)
            if not conversation.enable_thinking and last_soft_switch(text) is None:
                messages[-1] = {**messages[-1], "content": f"{text} /no_think"}  # for servers without kwargs
        else:
            assert self.template is not None and self.info is not None
            prompt, quantized = build_prompt(self.template, turns, enable_thinking=conversation.enable_thinking), \
                self.info.quantized
        sampling = sampling_for(self.variant, thinking, quantized)
        answer = self.store.start_answer(conversation.id, self.model_name, mode, dataclasses.asdict(sampling))
        with self._lock:
            self._streaming = _Streaming(answer.id, conversation.id, last_save=time.monotonic())
        self.sink(AnswerStarted(answer))
        self.engine.generate(GenerateRequest(answer.id, prompt, sampling, prompt_opens_thinking(prompt),
                                             tuple(messages), conversation.enable_thinking))
        return user

    def set_thinking(self, conversation_id: int, on: bool) -> None:
        self.send(conversation_id, "/think" if on else "/no_think")

    # -- engine thread --

    def _on_engine_event(self, event: EngineEvent) -> None:
        if isinstance(event, Loaded):
            if self.remote_model is not None:
                self.remote_model = str(event.model_path)  # the served model's id
            self.ready = True
            self.n_ctx = event.n_ctx
            self.gpu_layers = event.n_gpu_layers
            if self._retried:
                fit_memory.remember_layers(self._fit_key, event.n_gpu_layers)
        elif isinstance(event, Failed) and event.request_id is None and self._retry_with_fewer_layers(event):
            return
        elif isinstance(event, Token):
            self._on_token(event)
            return
        elif isinstance(event, Done):
            self.context_used = event.context_used
            self._finish(event.request_id, event)
            return
        elif isinstance(event, Failed) and event.request_id is not None:
            self._finish(event.request_id, None, event.message)
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
        if event.part.value == "thinking":
            streaming.thinking += event.text
        else:
            streaming.answer += event.text
        self.sink(event)
        now = time.monotonic()
        if now - streaming.last_save >= SAVE_EVERY:
            streaming.last_save = now
            # a busy database only delays this save; the final one retries
            with contextlib.suppress(StoreError):
                self.store.save_partial(streaming.message_id, streaming.thinking, streaming.answer)

    def _finish(self, message_id: int, done: Done | None, error: str = "") -> None:
        streaming = self._streaming
        thinking = done.thinking if done else (streaming.thinking if streaming else "")
        answer = done.answer if done else (streaming.answer if streaming else "")
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
                self.store.finish_answer(message_id, status, thinking, answer, closed, stats, error)
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


def _looks_quantized(model_id: str) -> bool:
    """A served GGUF (llama-server) is quantized; vLLM/SGLang usually serve BF16/FP8 checkpoints."""
    name = model_id.lower()
    return "gguf" in name or bool(re.search(r"\bq\d|iq\d|-q\d", name))


def plan_for_file(info: ModelInfo, variant: Variant, machine: Machine, n_ctx: int | None) -> Plan:
    """Qwen3 hybrid GGUFs from 4B up say 40,960 positions; YaRN ×2/×4 over the native 32,768 goes beyond."""
    hybrid_yarn = variant is Variant.HYBRID and info.context_length == 40960 and info.block_count > 28
    arch = arch_from_info(info, (2, 4) if hybrid_yarn else (), 32768 if hybrid_yarn else None)
    return plan(arch, [candidate_from_info(info)], machine, n_ctx)


__all__ = ["AnswerSaved", "AnswerStarted", "ChatSession", "LoadProgress", "Notice", "SessionEvent", "UserSaved"]
