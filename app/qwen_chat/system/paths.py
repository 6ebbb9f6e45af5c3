"""Where qwen-chat keeps its files (platformdirs), with overrides for tests and power users."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import PlatformDirs

_DIRS = PlatformDirs("qwen-chat", appauthor=False)


def data_dir() -> Path:
    """Conversations database and other user data. `QWEN_CHAT_DATA_DIR` overrides."""
    return Path(os.environ.get("QWEN_CHAT_DATA_DIR") or _DIRS.user_data_dir)


def log_dir() -> Path:
    """llama.cpp and app logs. Follows `QWEN_CHAT_DATA_DIR` when set so tests stay in their sandbox."""
    override = os.environ.get("QWEN_CHAT_DATA_DIR")
    return Path(override) / "logs" if override else Path(_DIRS.user_log_dir)


def config_dir() -> Path:
    return Path(os.environ.get("QWEN_CHAT_CONFIG_DIR") or _DIRS.user_config_dir)


def database_path() -> Path:
    """`QWEN_CHAT_DB` (or the `--db` flag, which sets it) overrides the default location."""
    return Path(os.environ.get("QWEN_CHAT_DB") or data_dir() / "conversations.db")


def models_dir() -> Path:
    """Downloaded GGUF files. `QWEN_CHAT_MODELS_DIR` overrides."""
    return Path(os.environ.get("QWEN_CHAT_MODELS_DIR") or data_dir() / "models")
