"""The model catalog (`models_catalog.yaml`): sampling presets and the Qwen3 GGUF family.

`load_catalog` returns the raw shipped file (presets). The models themselves are read, strictly validated and merged
with the user's override file by `catalog_loader.load_models`; here are the records it returns and the lookups
on them (`qwen3-8b:Q4_K_M`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

PRESET_KEYS = {"temperature", "top_p", "top_k", "min_p", "presence_penalty", "presence_penalty_quantized",
               "max_output"}


QWEN3_VOCAB = 151936


class CatalogError(Exception):
    pass


@dataclass(frozen=True)
class QuantFile:
    path: str  # relative to the repo root, `/`-separated
    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class Quant:
    name: str
    files: tuple[QuantFile, ...]
    estimated: bool  # sizes are estimates; the hub's listing is the truth at download time

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def split(self) -> bool:
        return len(self.files) > 1


@dataclass(frozen=True)
class CatalogModel:
    id: str
    name: str
    repo: str
    variant: str
    params: int
    active_params: int | None  # None for dense models
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    experts: int
    experts_used: int
    native_context: int
    gguf_context: int
    yarn_factors: tuple[int, ...]
    quants: dict[str, Quant] = field(hash=False)  # in file order
    kv_layers: int | None = None  # layers with a KV cache when not all have one (Qwen3-Next); None means all
    # hybrid recurrent models (Qwen3-Next, Qwen3.5): the recurrent (conv + ssm) state of one sequence, f32, as
    # llama.cpp allocates it for the layers without a KV cache
    recurrent_state_bytes: int = 0
    vocab_size: int = 151936  # Qwen3's; Qwen3.5 / 3.6 have 248,320 (so neither can draft for the other)

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    def kv_bytes_per_token(self, bytes_per_element: float = 2.0) -> int:
        """K and V for one token across all attention layers (f16 = 2.0, q8_0 = 34/32, q4_0 = 18/32)."""
        layers = self.layers if self.kv_layers is None else self.kv_layers
        return round(2 * layers * self.kv_heads * self.head_dim * bytes_per_element)


def shipped_file(name: str) -> Path:
    """A data file shipped in the wheel (`qwen_chat/data/`), or at the top of a source checkout."""
    packaged = resources.files("qwen_chat") / "data" / name
    if packaged.is_file() or packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[3] / name


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


# --- references like `qwen3-8b:Q5_K_M` -------------------------------------------------------------------------


def parse_model_ref(ref: str) -> tuple[str, str | None]:
    """`qwen3-8b` -> ("qwen3-8b", None); `Qwen3-8B:q5_k_m` -> ("qwen3-8b", "q5_k_m").

    Ids are lowercase in the catalog, so the id is lowercased; the quant keeps its case (matched case-insensitively
    by `find_model`).
    """
    model_id, colon, quant = ref.strip().partition(":")
    model_id, quant = model_id.strip().lower(), quant.strip()
    if not model_id:
        raise CatalogError(f"no model id in {ref!r}; expected e.g. qwen3-8b or qwen3-8b:Q4_K_M")
    if colon and not quant:
        raise CatalogError(f"no quant after ':' in {ref!r}; expected e.g. {model_id}:Q4_K_M")
    return model_id, quant or None


def find_model(ref: str, models: dict[str, CatalogModel]) -> tuple[CatalogModel, Quant | None]:
    """The model and (when the ref names one) quant; unknown names fail with the closest matches."""
    model_id, quant_name = parse_model_ref(ref)
    model = models.get(model_id)
    if model is None:
        raise CatalogError(f"unknown model {model_id!r}{_suggestions(model_id, list(models))}")
    if quant_name is None:
        return model, None
    by_upper = {name.upper(): quant for name, quant in model.quants.items()}
    quant = by_upper.get(quant_name.upper())
    if quant is None:
        names = {name.upper(): name for name in model.quants}
        hint = _suggestions(quant_name.upper(), list(names), shown=names)
        raise CatalogError(f"{model.id} has no quant {quant_name!r}{hint}")
    return model, quant


def _suggestions(word: str, candidates: list[str], shown: dict[str, str] | None = None) -> str:
    """Names starting with the word (`qwen3-30b` -> `qwen3-30b-a3b`) first, then difflib's closest."""
    shown = shown or {c: c for c in candidates}
    prefixed = [c for c in candidates if c.startswith(word)]
    close = list(dict.fromkeys(prefixed + difflib.get_close_matches(word, candidates, n=3, cutoff=0.6)))[:3]
    if not close:
        return "; available: " + ", ".join(shown[c] for c in candidates)
    names = [shown[c] for c in close]
    return "; did you mean " + (f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]) + "?"
