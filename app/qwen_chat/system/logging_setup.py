"""Logs go to files in the user's log dir; nothing from llama.cpp may reach the terminal."""

from __future__ import annotations

import logging
from logging.handlers import RotatingFileHandler
from pathlib import Path

from qwen_chat.system.paths import log_dir


def setup_logging(level: int = logging.INFO) -> Path:
    folder = log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name, filename in (("qwen_chat", "qwen-chat.log"), ("qwen_chat.llama_cpp", "llama.log")):
        logger = logging.getLogger(name)
        if any(isinstance(h, RotatingFileHandler) for h in logger.handlers):
            continue
        handler = RotatingFileHandler(folder / filename, maxBytes=5 << 20, backupCount=2, encoding="utf-8")
        handler.setFormatter(fmt)
        logger.addHandler(handler)
        logger.setLevel(level)
    # llama.cpp's log lines are only in llama.log, never echoed through qwen-chat.log or stderr
    logging.getLogger("qwen_chat.llama_cpp").propagate = False
    return folder
