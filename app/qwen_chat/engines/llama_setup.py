"""What a llama.cpp load needs around the `Llama(...)` call: llama.cpp's logging routed to our log file, the
hook that passes a progress callback and tensor placement overrides, the KV cache and RoPE arguments, and the
message for a load that failed.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import io
import logging
import re
from collections.abc import Iterator
from typing import Any

from qwen_chat.engines.protocol import LoadRequest

llama_log = logging.getLogger("qwen_chat.llama_cpp")


# ---- llama.cpp logging ----------------------------------------------------------------------------------

# enum ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continues the previous line)
_LEVELS = {0: logging.INFO, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_CONT = 5
_log_callback_ref: Any = None
_last_level = logging.INFO
# The last error lines llama.cpp logged since the current load began: a refused file's real cause (a duplicated
# tensor, a shard out of place, an unknown architecture) is only ever in the log, the exception says "failed".
_recent_errors: collections.deque[str] = collections.deque(maxlen=8)


def route_llama_logs() -> None:
    """Send llama.cpp's own logging to our logger (a file), never to the terminal."""
    global _log_callback_ref
    if _log_callback_ref is not None:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback
    def _callback(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        global _last_level
        _last_level = _LEVELS.get(level, _last_level)
        message = text.decode("utf-8", "replace").rstrip("\n")
        if message:
            llama_log.log(_last_level, message)
            if _last_level >= logging.ERROR:
                _keep_error(message, continued=level == _CONT)

    _log_callback_ref = _callback  # ctypes callbacks must outlive every call from C
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))


def _keep_error(message: str, continued: bool) -> None:
    if continued and _recent_errors:
        _recent_errors[-1] += message  # llama.cpp's CONT level goes on with the previous line
    else:
        _recent_errors.append(message.strip())


def forget_llama_errors() -> None:
    """Called as a load starts: only that load's errors are reported for it."""
    _recent_errors.clear()


# lines that only say that the load failed, not why
_GENERIC = re.compile(r"failed to load model|error loading model$", re.IGNORECASE)
_PREFIX = re.compile(r"^\w+: (?:error loading model: )?")  # the C function's name, and the wrapper's words


def llama_error_detail() -> str | None:
    """llama.cpp's own reason for the last failure: the first line since the load began that says more than
    "failed" (the root cause comes first; the lines after it report the failure up the call chain)."""
    lines = [_PREFIX.sub("", line).strip() for line in list(_recent_errors)]
    telling = [line for line in lines if line and not _GENERIC.search(line)]
    if telling:
        return telling[0]
    return lines[-1] if lines else None


class LogWriter(io.TextIOBase):
    """A file-like sink for llama-cpp-python's own `print(..., file=sys.stderr)` during loads."""

    def write(self, text: str) -> int:
        if text.strip():
            llama_log.info(text.rstrip("\n"))
        return len(text)


# ---- what `Llama(...)` cannot be given directly ---------------------------------------------------------


@contextlib.contextmanager
def model_params_hook(progress: Any, overrides: Any) -> Iterator[None]:
    """For one load, set the progress callback and the buffer overrides on the model parameters: `Llama()`
    takes neither, so the model class it builds them for is wrapped until the load returns."""
    from llama_cpp import llama as llama_module

    original = llama_module.internals.LlamaModel

    def with_progress(*, path_model: str, params: Any, verbose: bool = True) -> Any:
        params.progress_callback = progress
        if overrides is not None:
            params.tensor_buft_overrides = ctypes.cast(overrides, ctypes.c_void_p).value
        return original(path_model=path_model, params=params, verbose=verbose)

    # setattr: the wrapper stands in for the class only as the callable Llama() calls, which a type checker
    # cannot see
    setattr(llama_module.internals, "LlamaModel", with_progress)  # noqa: B010
    try:
        yield
    finally:
        setattr(llama_module.internals, "LlamaModel", original)  # noqa: B010


class _BuftOverride(ctypes.Structure):
    # struct llama_model_tensor_buft_override { const char * pattern; ggml_backend_buffer_type_t buft; }
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def expert_overrides(n_cpu_moe: int) -> Any:
    """A NULL-terminated override array putting the experts of blocks 0..n-1 in CPU memory, or None."""
    if n_cpu_moe <= 0:
        return None
    import llama_cpp

    cpu_buffer = llama_cpp.llama_cpp._lib.ggml_backend_cpu_buffer_type
    cpu_buffer.restype = ctypes.c_void_p
    blocks = "|".join(str(i) for i in range(n_cpu_moe))
    pattern = rf"blk\.({blocks})\.ffn_(up|down|gate|gate_up)_(ch|)exps".encode()
    array = (_BuftOverride * 2)()
    array[0].pattern, array[0].buft = pattern, cpu_buffer()
    _keep_alive[:] = [(array, pattern)]  # llama.cpp reads the patterns during the load
    return array


_keep_alive: list[Any] = []


def cache_and_rope(request: LoadRequest) -> dict[str, Any]:
    from qwen_chat.models.planner import kv_type_id

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
