"""The shipped model catalog (`models_catalog.yaml`): sampling presets now, the whole family later."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

PRESET_KEYS = {"temperature", "top_p", "top_k", "min_p", "presence_penalty", "presence_penalty_quantized",
               "max_output"}


class CatalogError(Exception):
    pass


def shipped_file(name: str) -> Path:
    """A data file shipped in the wheel (`qwen_chat/data/`), or at the top of a source checkout."""
    packaged = resources.files("qwen_chat") / "data" / name
    if packaged.is_file() or packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / name


@cache
def load_catalog(path: Path | None = None) -> dict[str, Any]:
    path = path or shipped_file("models_catalog.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"cannot read the model catalog {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("presets"), dict):
        raise CatalogError(f"{path}: the catalog has no 'presets' section")
    for name, preset in data["presets"].items():
        if not isinstance(preset, dict) or set(preset) != PRESET_KEYS:
            raise CatalogError(f"{path}: preset {name!r} must have exactly the keys {sorted(PRESET_KEYS)}")
    return data
