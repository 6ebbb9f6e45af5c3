"""What every engine speaks: requests in (load, generate), events out (progress, tokens, done, failures).

The session depends on this module only; llama.py (llama.cpp in-process) and http.py (an OpenAI-compatible
server) implement it, and the tests' FakeEngine replays scripted events through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from qwen_chat.qwen3.sampling import Sampling
from qwen_chat.qwen3.thinking import Part, StreamText
from qwen_chat.qwen3.tool_calls import ToolCall

# ---- requests -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DraftLoad:
    """A smaller model of the same vocabulary loaded beside the main one to draft tokens for it (the planner's
    choice, planning/draft_choice.py; engines/draft_model.py runs it). Its own context, cache and placement."""

    model_path: Path
    n_ctx: int
    n_gpu_layers: int = 0
    kv_type: str = "f16"
    flash_attn: bool = False


@dataclass(frozen=True)
class LoadRequest:
    model_path: Path
    n_ctx: int
    n_gpu_layers: int = 0
    n_threads: int | None = None
    n_threads_batch: int | None = None
    n_cpu_moe: int = 0  # keep the routed experts of blocks 0..n-1 in RAM (llama.cpp's --n-cpu-moe)
    kv_type: str = "f16"  # or "q8_0" (needs flash attention)
    flash_attn: bool = False
    yarn_factor: int = 0  # 0: the model's own RoPE; else YaRN over yarn_orig_ctx
    yarn_orig_ctx: int = 32768
    speculative: bool = True  # load the draft model, if any (drafting from the context is per answer)
    draft: DraftLoad | None = None  # a draft model for speculative decoding, or none


@dataclass(frozen=True)
class Trim:
    """Shorter prompts to fall back on when the full one would not leave room for an answer.

    `render(i)` gives the prompt with the i oldest turns left out (1 <= i < count); each is shorter than the
    one before. The system prompt and the current message are in every one of them.
    """

    render: Callable[[int], str]
    count: int


@dataclass(frozen=True)
class GenerateRequest:
    request_id: int
    prompt: str  # the rendered chat template (local engine)
    sampling: Sampling
    starts_in_thinking: bool = False
    messages: tuple[dict[str, Any], ...] = ()  # the same turns as chat messages (HTTP engines)
    enable_thinking: bool = True
    thinking_budget: int = 0  # 0: unlimited; else STOP_THINKING is inserted after this many thinking tokens
    trim: Trim | None = None
    # the end of the advice when a message does not fit the context even alone (the app has F7, `ask` --ctx)
    context_hint: str = "reload with a larger context (F7)"
    # the functions the model may call, as OpenAI function specs (already in `prompt` for the local engine; the
    # splitter looks for calls only when there are some)
    tools: tuple[dict[str, Any], ...] = ()
    # text the answer is made to begin with (local engine): it is put after the prompt and streamed as the
    # answer's first text, and the model goes on from it (the tests use it to make a small model call a tool)
    prefill: str = ""
    # speculative decoding for this answer (local engine; F5 turns it off and on without a reload): False decodes
    # one token at a time, as a load without drafting does
    drafting: bool = True


# ---- events ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadProgress:
    fraction: float


@dataclass(frozen=True)
class Loaded:
    model_path: Path
    n_ctx: int
    n_gpu_layers: int
    seconds: float


@dataclass(frozen=True)
class Token:
    """A piece of streamed text, already split into thinking or answer."""

    request_id: int
    part: Part
    text: str
    thinking_tokens: int = 0  # thinking tokens generated so far (for the budget meter)
    stream: StreamText | None = field(default=None, repr=False, compare=False)  # the whole answer so far


@dataclass(frozen=True)
class Trimmed:
    """The full conversation did not fit: the `dropped` oldest turns are not sent for this answer."""

    request_id: int
    dropped: int
    prompt_tokens: int
    n_ctx: int


@dataclass(frozen=True)
class Drafting:
    """Speculative decoding in one answer (local engine): drafts checked in batches, the output unchanged."""

    drafted: int = 0  # draft tokens decoded to be checked
    accepted: int = 0  # of those, the ones sampling agreed with
    batches: int = 0  # verification batches; each gave its accepted tokens + 1
    speedup: float = 0.0  # one-token decoding's time for the answer's tokens over the time taken; 0: not known
    off: str = ""  # why it did not draft at all ("" when it could)

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_batch(self) -> float:
        return (self.accepted + self.batches) / self.batches if self.batches else 0.0

    def short(self) -> str:
        """For the status bar: "drafts 92% 1.9x", or "" where nothing was drafted."""
        if not self.batches:
            return ""
        return f"drafts {self.acceptance:.0%}" + (f" {self.speedup:.1f}x" if self.speedup else "")

    def describe(self) -> str:
        """For `ask --verbose`: the figures in words."""
        if self.off:
            return f"speculative decoding: {self.off}"
        if not self.batches:
            return "speculative decoding: nothing to draft"
        speedup = f", about {self.speedup:.2f}x one-token decoding" if self.speedup else ""
        return (f"speculative decoding: {self.accepted:,} of {self.drafted:,} drafted tokens accepted "
                f"({self.acceptance:.0%}), {self.tokens_per_batch:.1f} tokens per batch in {self.batches:,} "
                f"batches{speedup}")

    def then(self, more: Drafting) -> Drafting:
        """This answer's figures followed by those of its next part (a thinking budget splits an answer in two);
        the speed-up of the part that drafted most."""
        main = more if more.batches > self.batches else self
        return Drafting(self.drafted + more.drafted, self.accepted + more.accepted, self.batches + more.batches,
                        main.speedup, self.off or more.off)


@dataclass(frozen=True)
class Done:
    request_id: int
    finish: str  # "stop" (model ended), "length" (hit max tokens or context), "stopped" (user)
    thinking: str
    answer: str
    saw_thinking: bool
    thinking_closed: bool
    prompt_tokens: int
    prompt_evaluated: int  # prompt tokens not found in the KV cache
    completion_tokens: int
    prompt_seconds: float
    generation_seconds: float
    context_used: int
    n_ctx: int
    tokens_per_second: float  # decode speed: streamed tokens after the first over the time they took
    thinking_tokens: int = 0
    thinking_cut_at: int | None = None  # offset in `thinking` where the budget's STOP_THINKING begins
    dropped: int = 0  # oldest turns left out to fit the context (see Trim)
    tool_calls: tuple[ToolCall, ...] = ()  # the calls the answer ends with (their text is not in `answer`)
    drafting: Drafting | None = None  # speculative decoding's figures (None: an engine that does not draft)


@dataclass(frozen=True)
class Failed:
    request_id: int | None  # None: a load failure
    message: str


EngineEvent = LoadProgress | Loaded | Token | Trimmed | Done | Failed


class EventSink(Protocol):
    """Where an engine sends its events (a Protocol, not Callable: mypy reads a Callable-typed dataclass field
    as read-only, so engines could not be assigned a new sink)."""

    def __call__(self, event: EngineEvent, /) -> None: ...


class ChatEngine(Protocol):
    """What the session needs from an engine: llama.py (in-process) or http.py (a server).
    Requests are queued and answered with events through `on_event`; `stop` works from any thread."""

    on_event: EventSink

    def start(self) -> ChatEngine: ...
    def load(self, request: LoadRequest) -> None: ...
    def generate(self, request: GenerateRequest) -> None: ...
    def stop(self) -> None: ...
    def shutdown(self, timeout: float = ...) -> None: ...
