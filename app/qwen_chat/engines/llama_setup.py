"""What a llama.cpp load needs around the `Llama(...)` call: the process-wide load lock, llama.cpp's errors kept
for the failure message, llama-cpp-python's own prints sent to our log, the `Llama` subclass that passes a
progress callback and tensor placement overrides, the KV cache and RoPE arguments, and the message for a load
that failed.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import io
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from qwen_chat.engines.protocol import LoadRequest
from qwen_chat.system.logging_setup import llama_cpp_library, llama_log

# One model load at a time in the whole process: llama.cpp's loader is not safe to run twice at once (two
# engines loading together crashed in llama_model_load on CUDA), and the streams a load swaps are the process's.
# Re-entrant: the engine holds it around its whole load, open_llama takes it again to be safe for any caller.
# Decoding with models already loaded needs no lock.
LOAD_LOCK = threading.RLock()


# ---- llama.cpp's errors during a load -------------------------------------------------------------------


class _ErrorKeeper(logging.Handler):
    """The last error lines llama.cpp logged on the loading thread since its load began: a refused file's real
    cause (a duplicated tensor, a shard out of place, an unknown architecture) is only ever in the log, the
    exception says "failed". Lines from other threads (another model decoding) are not this load's."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: collections.deque[str] = collections.deque(maxlen=8)
        self.thread: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        message = record.getMessage()
        if getattr(record, "llama_continues", False) and self.lines:
            self.lines[-1] += message  # llama.cpp's CONT level goes on with the previous line
        else:
            self.lines.append(message.strip())


_errors = _ErrorKeeper()


def forget_llama_errors() -> None:
    """Called as a load starts, on its thread: only that load's errors are reported for it."""
    _errors.lines.clear()
    _errors.thread = threading.get_ident()
    if _errors not in llama_log.handlers:
        llama_log.addHandler(_errors)


# lines that only say that the load failed, not why
_GENERIC = re.compile(r"failed to load model|error loading model$", re.IGNORECASE)
_PREFIX = re.compile(r"^\w+: (?:error loading model: )?")  # the C function's name, and the wrapper's words


def llama_error_detail() -> str | None:
    """llama.cpp's own reason for the last failure: the first line since the load began that says more than
    "failed" (the root cause comes first; the lines after it report the failure up the call chain)."""
    lines = [_PREFIX.sub("", line).strip() for line in list(_errors.lines)]
    telling = [line for line in lines if line and not _GENERIC.search(line)]
    if telling:
        return telling[0]
    return lines[-1] if lines else None


# ---- llama-cpp-python's own prints ----------------------------------------------------------------------


class LogWriter(io.TextIOBase):
    """A file-like sink for llama-cpp-python's own `print(..., file=sys.stderr)` during loads."""

    def write(self, text: str) -> int:
        if text.strip():
            llama_log.info(text.rstrip("\n"))
        return len(text)


@contextlib.contextmanager
def prints_to_log() -> Iterator[None]:
    """sys.stdout and sys.stderr point at the log while a load runs (with verbose=True llama-cpp-python prints
    the system info there), then back at what they were. They are the process's, so only the holder of LOAD_LOCK
    may swap them: two loads swapping them at once left them pointing at the log for good."""
    with LOAD_LOCK, contextlib.redirect_stderr(LogWriter()), contextlib.redirect_stdout(LogWriter()):
        yield


# ---- what `Llama(...)` cannot be given directly ---------------------------------------------------------


@dataclass(frozen=True)
class ModelParamsExtras:
    """What this load sets on llama.cpp's model parameters beyond Llama()'s arguments."""

    progress: Any  # a llama_progress_callback; returning False aborts the load
    overrides: BuftOverrides | None = None


@functools.cache
def _llama_class() -> type:
    """llama_cpp.Llama with its `model_params` attribute made a property: Llama.__init__ creates the parameters
    with `self.model_params = llama_model_default_params()`, fills them in and then loads the model from them,
    so the setter sees them first and adds this instance's progress callback and buffer overrides. Nothing
    outside the instance changes, so loads in other threads (or other Llama objects) never see them."""
    llama: Any = llama_cpp_library().Llama  # Any: llama_cpp ships no type information

    class LlamaWithExtras(llama):
        def __init__(self, *args: Any, extras: ModelParamsExtras, **kwargs: Any) -> None:
            self._extras = extras  # kept with the object: the parameters llama.cpp reads point into them
            super().__init__(*args, **kwargs)
            if self._model.params is not self.__dict__.get("_params"):
                # a llama-cpp-python that builds the parameters another way: say so, never load without them
                self.close()
                raise RuntimeError("llama-cpp-python no longer sets Llama.model_params before loading; "
                                   "the load progress hook needs updating")

        @property
        def model_params(self) -> Any:
            return self._params

        @model_params.setter
        def model_params(self, params: Any) -> None:
            params.progress_callback = self._extras.progress
            if self._extras.overrides is not None:
                params.tensor_buft_overrides = self._extras.overrides.address
            self._params = params

    return LlamaWithExtras


def open_llama(extras: ModelParamsExtras, **kwargs: Any) -> Any:
    """`llama_cpp.Llama(**kwargs)` with the progress callback and buffer overrides of `extras`, loaded under
    LOAD_LOCK with llama-cpp-python's prints in our log. verbose=True: verbose=False would point file
    descriptors 1 and 2 at /dev/null for the whole process while it loads, which blanks a full-screen terminal."""
    cls = _llama_class()
    with prints_to_log():
        return cls(extras=extras, verbose=True, **kwargs)


class _BuftOverride(ctypes.Structure):
    # struct llama_model_tensor_buft_override { const char * pattern; ggml_backend_buffer_type_t buft; }
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


@dataclass(frozen=True)
class BuftOverrides:
    """A NULL-terminated llama_model_tensor_buft_override array, with the pattern bytes its entry points at."""

    array: Any
    pattern: bytes

    @property
    def address(self) -> int | None:
        return ctypes.cast(self.array, ctypes.c_void_p).value


def expert_overrides(n_cpu_moe: int) -> BuftOverrides | None:
    """Overrides putting the experts of blocks 0..n-1 in CPU memory, or None. The caller keeps the result for
    as long as the load runs (llama.cpp reads the patterns then)."""
    if n_cpu_moe <= 0:
        return None
    llama_cpp = llama_cpp_library()
    cpu_buffer = llama_cpp.llama_cpp._lib.ggml_backend_cpu_buffer_type
    cpu_buffer.restype = ctypes.c_void_p
    blocks = "|".join(str(i) for i in range(n_cpu_moe))
    pattern = rf"blk\.({blocks})\.ffn_(up|down|gate|gate_up)_(ch|)exps".encode()
    array = (_BuftOverride * 2)()
    array[0].pattern, array[0].buft = pattern, cpu_buffer()
    return BuftOverrides(array, pattern)


def cache_and_rope(request: LoadRequest) -> dict[str, Any]:
    from qwen_chat.gguf.kv_types import kv_type_id

    extra: dict[str, Any] = {}
    if request.kv_type != "f16":
        extra["type_k"] = extra["type_v"] = kv_type_id(request.kv_type)
    if request.yarn_factor:
        extra.update(rope_scaling_type=2, rope_freq_scale=1.0 / request.yarn_factor,
                     yarn_orig_ctx=request.yarn_orig_ctx)
    return extra


def load_failure_message(request: LoadRequest, exc: Exception) -> str:
    from qwen_chat.system.paths import log_dir

    text = str(exc)
    detail = llama_error_detail()
    details = f"Details: {log_dir() / 'llama.log'}"
    if "context" in text.lower():
        said = f" (llama.cpp: {detail})" if detail else ""
        return (f"llama.cpp could not create a {request.n_ctx:,}-token context for {request.model_path.name}"
                f"{said}: most likely not enough memory. Try a smaller --ctx. {details}")
    if detail:
        return (f"llama.cpp could not load {request.model_path.name}: {detail}. The file may be damaged or made "
                f"for a newer llama.cpp. {details}")
    return (f"llama.cpp could not load {request.model_path.name} ({text}). The file may be damaged or made for "
            f"a newer llama.cpp. {details}")


def fill_batch(batch: Any, tokens: Sequence[int], first_pos: int, logits_last: bool) -> None:
    """Put `tokens` in a llama_batch at positions from `first_pos` (sequence 0, as the batch was made), logits
    only for the last one when `logits_last`."""
    for i, token in enumerate(tokens):
        batch.token[i] = token
        batch.pos[i] = first_pos + i
        batch.logits[i] = 0
    batch.logits[len(tokens) - 1] = logits_last
    batch.n_tokens = len(tokens)


def common_prefix(cached: Sequence[int], wanted: Sequence[int]) -> int:
    """How many leading tokens the two share (what a KV cache holding `cached` can keep for `wanted`)."""
    same = 0
    for a, b in zip(cached, wanted, strict=False):
        if a != b:
            break
        same += 1
    return same
