"""Which other processes have a file mapped: llama.cpp maps the model it runs (mmap), so a model file in use by a
running qwen-chat (or llama-server) window shows in that process's memory map. Linux only (/proc); elsewhere
the answer is "unknown" and callers warn instead of refusing."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

_PROC = Path("/proc")


def processes_using(paths: Iterable[Path]) -> list[tuple[int, str]] | None:
    """(pid, command name) of each other process that maps one of `paths`; None where this cannot be known.
    Processes of other users cannot be read and are not reported."""
    if not (_PROC / "self" / "maps").is_file():
        return None
    wanted = {os.path.realpath(p) for p in paths}
    users = []
    for entry in _pids():
        try:
            maps = (entry / "maps").read_text(encoding="utf-8", errors="replace")
        except OSError:  # gone meanwhile, or another user's
            continue
        if any(line.partition("/")[1] and "/" + line.partition("/")[2] in wanted for line in maps.splitlines()):
            users.append((int(entry.name), _name(entry)))
    return users


def _pids() -> list[Path]:
    me = os.getpid()
    try:
        return [p for p in _PROC.iterdir() if p.name.isdigit() and int(p.name) != me]
    except OSError:
        return []


def _name(entry: Path) -> str:
    try:
        return (entry / "comm").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "?"
