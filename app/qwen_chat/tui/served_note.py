"""Whether a `qwen-chat serve` on this machine serves the file the chat has open: the status bar says "served at
URL", so the user knows the model is loaded twice (once per process) and where the other tools find it. Read from
the servers' registry (serve/registry.py) every few seconds, never per redraw."""

from __future__ import annotations

from pathlib import Path

from qwen_chat.serve.registry import served_at

CHECK_EVERY = 5.0  # seconds


def served_label(model_path: Path | None) -> str:
    """"served at URL" (the first when several serve it), or "" when none does or there is no local file."""
    if model_path is None:
        return ""
    urls = served_at(model_path)
    return f"served at {urls[0]}" if urls else ""
