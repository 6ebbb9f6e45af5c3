"""What `--model` names: a file path, a catalog id (`qwen3-8b`, `qwen3-8b:Q5_K_M`) or a downloaded file's name."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from qwen_chat.catalog.entries import CatalogError, find_model
from qwen_chat.catalog.loader import load_models
from qwen_chat.hub.download_state import merged_copy
from qwen_chat.system.paths import models_dir


class ModelNotFound(Exception):
    pass


def resolve_model(ref: str) -> Path:
    path = Path(ref).expanduser()
    if path.is_file() or path.suffix == ".gguf" or "/" in ref:
        return path  # a path: read_model_info gives the clear message if it is missing or bad
    folder = models_dir()
    for candidate in (folder / ref, folder / f"{ref}.gguf"):
        if candidate.is_file():
            return candidate
    try:
        model, quant = find_model(ref, load_models())
    except CatalogError as exc:
        raise ModelNotFound(f"{ref} is neither a file nor a downloaded model: {exc}") from None
    quants = [quant] if quant else list(model.quants.values())
    for q in quants:
        merged = merged_copy(q, folder)
        if merged is not None:
            return merged
        files = [folder / PurePosixPath(f.path).name for f in q.files]
        if all(f.is_file() for f in files):
            return files[0]  # a single file, or the first shard of a split model
    wanted = f"{model.id}:{quant.name}" if quant else model.id
    raise ModelNotFound(f"{wanted} is not downloaded yet. Get it with: qwen-chat pull {wanted}")
