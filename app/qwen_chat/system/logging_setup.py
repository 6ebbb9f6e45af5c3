"""Logs go to files in the user's log dir; nothing from llama.cpp may reach the terminal.

llama.cpp logs through one process-wide callback. llama-cpp-python installs its own when it is imported, which
prints everything on stderr, and the backends log as soon as they are first asked anything (CUDA lists its
devices when the hardware is probed, long before a model loads). So every use of the library in the app goes
through `llama_cpp_library()`, which installs our callback before handing the module out.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from logging.handlers import RotatingFileHandler
from pathlib import Path
from types import ModuleType
from typing import Any

from qwen_chat.system.paths import log_dir

LLAMA_LOGGER = "qwen_chat.llama_cpp"
llama_log = logging.getLogger(LLAMA_LOGGER)


def setup_logging(level: int = logging.INFO) -> Path:
    folder = log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name, filename in (("qwen_chat", "qwen-chat.log"), (LLAMA_LOGGER, "llama.log")):
        logger = logging.getLogger(name)
        if any(isinstance(h, RotatingFileHandler) for h in logger.handlers):
            continue
        handler = RotatingFileHandler(folder / filename, maxBytes=5 << 20, backupCount=2, encoding="utf-8")
        handler.setFormatter(fmt)
        logger.addHandler(handler)
        logger.setLevel(level)
    _keep_llama_logs_off_the_terminal()
    return folder


def _keep_llama_logs_off_the_terminal() -> None:
    # llama.cpp's lines are only in llama.log, never echoed through qwen-chat.log or stderr; a command that set no
    # log file (doctor, models) drops them: with no handler at all Python's last resort would print the warnings
    llama_log.propagate = False
    if not llama_log.handlers:
        llama_log.addHandler(logging.NullHandler())


# ---- llama.cpp's log callback ----------------------------------------------------------------------------

# enum ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continues the previous line)
_LEVELS = {0: logging.INFO, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
LLAMA_CONT = 5
_callback_ref: Any = None  # ctypes callbacks must outlive every call from C: kept for the process's life
_last_level = logging.INFO
_install_lock = threading.Lock()


def llama_cpp_library() -> ModuleType:
    """The `llama_cpp` module, with llama.cpp's logging already routed to our logger (llama.log).

    Importing the package makes no backend call (it asks only for the constant llama_max_devices), so installing
    the callback right after the import comes before anything the backends could say. Raises ImportError when
    llama-cpp-python is missing, RuntimeError or OSError when its shared library does not load."""
    import llama_cpp

    with _install_lock:  # two threads' first uses (the hardware probe, an engine) install it once
        if _callback_ref is None:
            _install_callback(llama_cpp)
    return llama_cpp


def _install_callback(llama_cpp: Any) -> None:
    global _callback_ref
    _keep_llama_logs_off_the_terminal()

    @llama_cpp.llama_log_callback
    def _callback(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        global _last_level
        _last_level = _LEVELS.get(level, _last_level)
        message = text.decode("utf-8", "replace").rstrip("\n")
        if message:
            llama_log.log(_last_level, message, extra={"llama_continues": level == LLAMA_CONT})

    _callback_ref = _callback
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
