"""Whether a `qwen-chat serve` on this machine serves the file the chat has open: the status bar says "served at
URL", so the user knows the model is loaded twice (once per process) and where the other tools find it. Read from
the servers' registry (serve/registry.py) every few seconds, never per redraw."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from qwen_chat.serve.registry import served_at

CHECK_EVERY = 5.0  # seconds


def served_label(model_path: Path | None) -> str:
    """"served :PORT" ("served HOST:PORT" off loopback; the first when several serve it), or "" when none does
    or there is no local file. Short, because the status bar is full at 130 columns; /v1 is always the path."""
    if model_path is None:
        return ""
    urls = served_at(model_path)
    if not urls:
        return ""
    where = urlsplit(urls[0])
    host = "" if where.hostname in ("127.0.0.1", "localhost", "::1") else where.hostname
    return f"served {host}:{where.port}"
