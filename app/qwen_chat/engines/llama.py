"""The llama.cpp engine: one thread owns the `Llama` object for its whole life.

Callers queue requests (load, generate) and receive events through a callback that runs on the engine
thread; it must be quick (the TUI only appends to a queue). `stop()` may be called from any thread: it sets
a flag that llama.cpp's abort callback reads, so it also cuts a long prompt evaluation short.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qwen_chat.engines.llama_setup import (
    LOAD_LOCK,
    ModelParamsExtras,
    cache_and_rope,
    expert_overrides,
    forget_llama_errors,
    load_failure_message,
    open_llama,
)
from qwen_chat.engines.protocol import (
    Done,
    Drafting,
    EventSink,
    Failed,
    GenerateRequest,
    Loaded,
    LoadProgress,
    LoadRequest,
    Token,
    Trimmed,
)
from qwen_chat.engines.worker import RequestWorker
from qwen_chat.qwen3.sampling import Sampling
from qwen_chat.qwen3.thinking import STOP_THINKING, Part, ThinkingSplitter
from qwen_chat.system.logging_setup import llama_cpp_library

if TYPE_CHECKING:  # decode_loop imports llama_cpp, which the engine loads only when a model is
    from qwen_chat.engines.decode_loop import DecodeLoop, Generation, SamplerParams
    from qwen_chat.engines.draft_model import DraftModel

log = logging.getLogger("qwen_chat.engines.llama")
_INSERTED_THINKING = STOP_THINKING.split("</think>")[0].rstrip("\n")  # what of it the splitter keeps as thinking


@dataclass
class _Loaded:
    llm: Any
    request: LoadRequest
    abort_ref: Any = None
    bos_text: str = ""
    add_bos: bool = False
    reuse: tuple[str, list[int]] | None = None  # the last answer's text and tokens (see _tokenize)
    loop: DecodeLoop | None = None  # generates with llm and knows what its KV cache holds (decode_loop.py)
    draft: DraftModel | None = None  # a smaller model of the same vocabulary drafting for llm (draft_model.py)


@dataclass
class Engine(RequestWorker):
    thread_name = "llama-engine"
    on_event: EventSink
    _queue: queue.Queue[Any] = field(default_factory=queue.Queue)
    _cancel: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _model: _Loaded | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    # -- engine thread --

    def _shutting_down(self) -> None:
        self._unload()

    def _unload(self) -> None:
        if self._model is not None:
            with contextlib.suppress(Exception):
                if self._model.loop is not None:
                    self._model.loop.close()
                if self._model.draft is not None:
                    self._model.draft.close()
                self._model.llm.close()
            self._model = None

    def _load(self, request: LoadRequest) -> None:
        self._cancel.clear()  # before waiting for the lock: a stop while another engine loads cancels this load
        with LOAD_LOCK:  # one load at a time in the process (llama_setup.py); this engine's unload is part of it
            self._unload()
            forget_llama_errors()  # a failure message quotes this load's errors, never an earlier one's
            started = time.perf_counter()
            try:
                llm = self._open(request)
            except ValueError as exc:
                if self._cancel.is_set():
                    self._emit(Failed(None, "Loading was cancelled."))
                else:
                    self._emit(Failed(None, load_failure_message(request, exc)))
                return
            draft = self._open_draft(request)
        llm.verbose = False  # no per-call prints from here on
        self._model = self._prepare(llm, request, draft)
        self._emit(Loaded(request.model_path, llm.n_ctx(), request.n_gpu_layers, time.perf_counter() - started))

    def _open(self, request: LoadRequest) -> Any:
        """The `Llama` object for the request, its load reported as LoadProgress and stopped by `stop()`."""
        import psutil

        physical = psutil.cpu_count(logical=False) or psutil.cpu_count() or 1
        extras = ModelParamsExtras(self._progress_callback(), expert_overrides(request.n_cpu_moe))
        return open_llama(
            extras,
            model_path=str(request.model_path),
            n_ctx=request.n_ctx,
            n_gpu_layers=request.n_gpu_layers,
            n_threads=request.n_threads or physical,
            n_threads_batch=request.n_threads_batch or psutil.cpu_count() or physical,
            n_batch=min(512, request.n_ctx),
            flash_attn=request.flash_attn,
            **cache_and_rope(request),
        )

    def _open_draft(self, request: LoadRequest) -> DraftModel | None:
        """The draft model the plan put beside the main one (request.draft), or None. One that does not load is
        left out, logged: answers are the same without it, only slower. Its load reports no progress of its own
        (the bar has reached the end) but a stop cancels it."""
        if request.draft is None or not request.speculative or self._cancel.is_set():
            return None
        from qwen_chat.engines.draft_model import open_draft

        llama_cpp = llama_cpp_library()

        @llama_cpp.llama_progress_callback
        def go_on(_fraction: float, _user: ctypes.c_void_p) -> bool:
            return not self._cancel.is_set()

        try:
            return open_draft(request.draft, request, go_on, self._cancel.is_set)
        except (ValueError, RuntimeError) as exc:
            log.warning("the draft model %s was not loaded: %s", request.draft.model_path.name, exc)
            return None

    def _progress_callback(self) -> Any:
        llama_cpp = llama_cpp_library()
        last = [0.0]

        @llama_cpp.llama_progress_callback
        def progress(fraction: float, _user: ctypes.c_void_p) -> bool:
            if fraction - last[0] >= 0.02 or fraction >= 1.0:
                last[0] = fraction
                self._emit(LoadProgress(fraction))
            return not self._cancel.is_set()

        return progress

    def _prepare(self, llm: Any, request: LoadRequest, draft: DraftModel | None = None) -> _Loaded:
        import llama_cpp

        from qwen_chat.engines.decode_loop import DecodeLoop
        from qwen_chat.engines.drafting import DraftSource, PromptLookup

        @llama_cpp.ggml_abort_callback
        def abort(_data: ctypes.c_void_p) -> bool:
            return self._cancel.is_set()

        llama_cpp.llama_set_abort_callback(llm._ctx.ctx, abort, None)
        bos_id = llm.token_bos()
        bos_text = llm.detokenize([bos_id], special=True).decode("utf-8", "replace") if bos_id >= 0 else ""
        add_bos = bool(llama_cpp.llama_vocab_get_add_bos(llm._model.vocab)) if bos_id >= 0 else False
        # the loop arms the abort callback only where a stop must cut into llama_decode (see decode_loop.py)
        # the context first: free, so always there (each answer says whether it drafts: GenerateRequest.drafting)
        drafts: list[DraftSource] = [PromptLookup()]
        if draft is not None:
            drafts.append(draft)  # the draft model proposes where nothing cheaper does
        return _Loaded(llm, request, abort, bos_text, add_bos, loop=DecodeLoop(llm, abort, drafts), draft=draft)

    def _generate(self, request: GenerateRequest) -> None:
        self._cancel.clear()
        model = self._model
        if model is None:
            self._emit(Failed(request.request_id, "No model is loaded."))
            return
        llm = model.llm
        n_ctx = llm.n_ctx()
        sampling = request.sampling
        fitted = self._fit_prompt(model, request)
        if isinstance(fitted, str):
            self._emit(Failed(request.request_id, fitted))
            return
        prompt, tokens, dropped = fitted
        if dropped:
            self._emit(Trimmed(request.request_id, dropped, len(tokens), n_ctx))
        splitter = ThinkingSplitter(starts_in_thinking=request.starts_in_thinking, find_tool_calls=bool(request.tools))
        run = _Run(request, splitter, time.perf_counter())
        if request.prefill:
            prompt += request.prefill
            tokens = _tokenize(model, prompt, reuse=True)
            for part, text in splitter.feed(request.prefill):
                self._emit(Token(request.request_id, part, text, 0, stream=splitter.text))
        max_tokens = max(1, min(sampling.max_tokens, n_ctx - len(tokens)))
        budget = request.thinking_budget
        first_call = min(max_tokens, budget) if budget > 0 else max_tokens
        first, raw = self._stream(model, tokens, first_call, run)
        last, call_text, call_tokens, call_raw = first, prompt, tokens, raw
        if first.finish == "length" and first_call < max_tokens:
            # The budget ended the first call. Still thinking: insert the stop-thinking instruction (Qwen3
            # Technical Report) and let the model answer; already answering: just carry on.
            inserted = ""
            if run.splitter.saw_thinking and not run.splitter.thinking_closed:
                inserted = STOP_THINKING
                for part, text in run.splitter.feed(inserted):
                    self._emit(Token(request.request_id, part, text, run.thinking_tokens, stream=run.splitter.text))
                # where the inserted text begins, counted from the end: the splitter may have held back the end
                # of the model's own thinking (a "<" that could have begun "</think>") and let it out before it
                run.cut_at = max(0, run.splitter.text.length(Part.THINKING) - len(_INSERTED_THINKING))
            more = _tokenize(model, prompt + raw + inserted)  # the KV cache still holds all but its tail
            left = min(max_tokens - first_call, n_ctx - len(more))
            run.generated_before = first_call
            if left > 0:
                last, more_raw = self._stream(model, more, left, run)
                call_text, call_tokens, call_raw = prompt + raw + inserted, more, more_raw
        assert model.loop is not None
        model.reuse = _sampled(llm, call_text, call_tokens, call_raw, model.loop.tokens)
        self._finish_generation(model, request, run, last, tokens, first.reused, dropped)

    def _fit_prompt(self, model: _Loaded, request: GenerateRequest) -> tuple[str, list[int], int] | str:
        """The fullest prompt that leaves room for an answer: (prompt, tokens, oldest turns dropped), or why not.

        Room is the preset's output limit, capped at a quarter of the context. When turns must go, enough go
        to leave another quarter free, so the next turns keep the same start and reuse the KV cache.
        """
        llm = model.llm
        n_ctx = llm.n_ctx()
        reserve = max(16, min(request.sampling.max_tokens, n_ctx // 4))
        tokens = _tokenize(model, request.prompt, reuse=True)
        if len(tokens) + reserve <= n_ctx:
            return request.prompt, tokens, 0
        trim = request.trim
        options = trim.count if trim is not None else 1
        best: tuple[str, list[int], int] | None = None
        for dropped in range(1, options):
            assert trim is not None
            prompt = trim.render(dropped)
            shorter = _tokenize(model, prompt)
            if len(shorter) + reserve <= n_ctx and best is None:
                best = (prompt, shorter, dropped)
            if len(shorter) + reserve + n_ctx // 4 <= n_ctx:
                return prompt, shorter, dropped
            tokens = shorter
        if best is not None:
            return best
        return (f"This message does not fit the context: with only the system prompt and your message the prompt is "
                f"{len(tokens):,} tokens, and the context holds {n_ctx:,} (an answer needs room too). Shorten the "
                f"message, or {request.context_hint}.")

    def _stream(self, model: _Loaded, tokens: list[int], max_tokens: int, run: _Run) -> tuple[Generation, str]:
        """One pass of the decode loop from `tokens`, streamed into `run`. Returns (how it ended, raw text)."""
        assert model.loop is not None
        rid = run.request.request_id
        splitter = run.splitter
        raw: list[str] = []

        def on_token(text: str, generated: int) -> None:  # every sampled token, the end-of-turn one with ""
            now = time.perf_counter()
            if run.first_token_at is None:
                run.first_token_at = now
            run.last_token_at = now
            run.chunks += 1
            raw.append(text)
            pieces = splitter.feed(text)
            if splitter.saw_thinking and not splitter.thinking_closed and run.cut_at is None:
                run.thinking_tokens = run.generated_before + generated  # sampled so far, for the budget meter
            for part, piece in pieces:
                self._emit(Token(rid, part, piece, run.thinking_tokens, stream=splitter.text))

        # The abort callback (set in _load) makes llama_decode return early on stop; between tokens the loop asks
        # the flag itself. Either way the loop reports "stopped" and its record of the KV cache stays exact.
        result = model.loop.generate(tokens, max_tokens, _sampler_params(run.request.sampling), on_token,
                                     self._cancel.is_set, run.request.drafting)
        if result.finish == "stopped":
            log.info("generation stopped after %d tokens", result.generated)
        run.drafting = result.drafting if run.drafting is None else run.drafting.then(result.drafting)
        return result, "".join(raw)

    def _finish_generation(self, model: _Loaded, request: GenerateRequest, run: _Run, last: Generation,
                           tokens: list[int], cached: int, dropped: int) -> None:
        assert model.loop is not None
        splitter = run.splitter
        for part, text in splitter.finish():
            self._emit(Token(request.request_id, part, text, run.thinking_tokens, stream=splitter.text))
        ended = time.perf_counter()
        first = run.first_token_at or ended
        last_at = run.last_token_at
        context_used = model.loop.n_cached
        # The answer's tokens are in the cache after the prompt, but for the last one sampled when it was never
        # evaluated (the end-of-turn token, the max_tokens-th, one cut off by a stop).
        generated = max(0, context_used - len(tokens)) + (1 if last.pending is not None else 0)
        finish = last.finish
        llm = model.llm
        self._emit(Done(
            request_id=request.request_id,
            finish=finish,
            thinking=splitter.thinking,
            answer=splitter.answer,
            saw_thinking=splitter.saw_thinking,
            thinking_closed=splitter.thinking_closed,
            prompt_tokens=len(tokens),
            prompt_evaluated=len(tokens) - cached,
            completion_tokens=generated,
            prompt_seconds=first - run.started,
            generation_seconds=(last_at - first) if run.chunks > 1 else 0.0,
            context_used=context_used,
            n_ctx=llm.n_ctx(),
            tokens_per_second=(run.chunks - 1) / (last_at - first) if run.chunks > 1 and last_at > first else 0.0,
            thinking_tokens=run.thinking_tokens,
            thinking_cut_at=run.cut_at,
            dropped=dropped,
            tool_calls=tuple(splitter.text.tool_calls()),
            drafting=run.drafting,
        ))


@dataclass
class _Run:
    """What one answer has produced so far, across the calls a thinking budget splits it into."""

    request: GenerateRequest
    splitter: ThinkingSplitter
    started: float
    first_token_at: float | None = None
    last_token_at: float = 0.0
    chunks: int = 0
    thinking_tokens: int = 0
    cut_at: int | None = None
    generated_before: int = 0  # tokens generated by earlier calls for this answer
    drafting: Drafting | None = None  # speculative decoding's figures, over the calls


def _tokenize(model: _Loaded, prompt: str, reuse: bool = False) -> list[int]:
    """The prompt's tokens. With `reuse`, a prompt that continues the last answer keeps the tokens the model
    sampled for it: re-tokenizing the text can split it differently ("O"+"ak" sampled, "Oak" re-tokenized),
    which would send llama.cpp back to re-read that whole answer."""
    if reuse and model.reuse is not None and prompt.startswith(model.reuse[0]):
        text, ids = model.reuse
        return ids + model.llm.tokenize(prompt[len(text):].encode("utf-8"), add_bos=False, special=True)
    add_bos = model.add_bos and not (model.bos_text and prompt.startswith(model.bos_text))
    return model.llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)


def _sampler_params(sampling: Sampling) -> SamplerParams:
    """The engine's sampling settings as create_completion took them (no frequency or repeat penalty)."""
    from qwen_chat.engines.decode_loop import SamplerParams

    return SamplerParams(temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
                         min_p=sampling.min_p, presence_penalty=sampling.presence_penalty, frequency_penalty=0.0,
                         repeat_penalty=1.0, seed=sampling.seed)


def _sampled(llm: Any, prompt: str, tokens: list[int], raw: str, ids: list[int]) -> tuple[str, list[int]] | None:
    """(prompt + answer text, the tokens llama.cpp evaluated for them), when those tokens are exactly that text
    (not after a cut-off: the last sampled token was never evaluated). `ids`: what the KV cache holds (the
    decode loop's record)."""
    if ids[: len(tokens)] != tokens or not raw:
        return None
    if llm.detokenize(ids[len(tokens):], special=True) != raw.encode("utf-8"):
        return None
    return prompt + raw, ids
