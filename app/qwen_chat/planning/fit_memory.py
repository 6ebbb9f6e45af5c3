"""What actually loaded on this machine: when a planned GPU layer count failed for memory and one fewer
worked, the next load of that model starts from what worked instead of failing again."""

from __future__ import annotations

import json
import os
from pathlib import Path

from qwen_chat.system.hardware import Machine
from qwen_chat.system.paths import data_dir


def _file() -> Path:
    return data_dir() / "fit-memory.json"


def key(machine: Machine, model_file: Path, size: int) -> str:
    gpus = ",".join(f"{d.description}:{d.total_bytes}" for d in machine.gpus) or "cpu"
    return f"{gpus}|{model_file.name}|{size}"


def _read() -> dict[str, int]:
    try:
        data = json.loads(_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: int(v) for k, v in data.items() if isinstance(v, int)} if isinstance(data, dict) else {}


def remembered_layers(entry: str) -> int | None:
    return _read().get(entry)


def remember_layers(entry: str, n_gpu_layers: int) -> None:
    data = _read()
    data[entry] = n_gpu_layers
    path = _file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)
