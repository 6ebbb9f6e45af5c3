"""Which `qwen-chat serve` processes run on this machine, and on which model file: each writes a small JSON file
in the data folder while it serves and removes it when it stops, so a chat window opening the same file can say
where the model is served already (a server killed hard leaves its file behind; a dead process id is skipped)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from qwen_chat.system.paths import data_dir


def _folder() -> Path:
    return data_dir() / "servers"


def register(url: str, model_path: Path) -> Path:
    """Record this process's server; the returned file is passed to `unregister` when it stops."""
    folder = _folder()
    folder.mkdir(parents=True, exist_ok=True)
    entry = folder / f"{os.getpid()}.json"
    entry.write_text(json.dumps({"pid": os.getpid(), "url": url, "model": str(model_path.resolve())}),
                     encoding="utf-8")
    return entry


def unregister(entry: Path) -> None:
    with contextlib.suppress(OSError):
        entry.unlink()


def served_at(model_path: Path) -> list[str]:
    """The URLs of the live servers serving `model_path` (the file itself, however it was named)."""
    import psutil

    try:
        target = str(model_path.resolve())
        entries = sorted(_folder().glob("*.json"))
    except OSError:
        return []
    urls = []
    for entry in entries:
        try:
            record = json.loads(entry.read_text(encoding="utf-8"))
            live = psutil.pid_exists(int(record["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if live and record.get("model") == target and isinstance(record.get("url"), str):
            urls.append(record["url"])
    return urls
