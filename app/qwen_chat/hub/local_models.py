"""The GGUF files already on this disk: the models folder and the user's Hugging Face cache.

Used by `qwen-chat list` / `rm`, the first run (offline, it offers what is here) and the F3 screen (local
files that are not in the catalog). Each model is read cheaply: its name, architecture and quant come from the
first shard's GGUF header (milliseconds; the vocabulary is skipped), never its weights. A split set
(`NAME-00001-of-0000N.gguf` ...) is one model, counted once, with every shard in `files`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from qwen_chat.catalog.entries import CatalogError, CatalogModel
from qwen_chat.gguf.header import HeaderError, read_header
from qwen_chat.gguf.merge_plan import default_output
from qwen_chat.system.paths import models_dir

MODELS_FOLDER, HF_CACHE = "models folder", "Hugging Face cache"
_SHARD = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
# A quant named in a file name (`Qwen3-8B-Q4_K_M.gguf`, `...-UD-IQ2_XXS-00001-of-00002.gguf`): the usual way
# GGUF repos name them; the header's general.file_type is the fallback.
_QUANT_IN_NAME = re.compile(r"(?:^|[-_.])((?:UD-)?(?:I?Q\d_[A-Z0-9_]+|Q\d_\d|BF16|F16|F32|MXFP4(?:_MOE)?))"
                            r"(?=[-.]|$)", re.IGNORECASE)
# llama_ftype (llama.h) -> the name llama.cpp's quantize tool gives it.
_FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS",
    20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE",
}
_MAX_DEPTH = 4  # folders below the models folder that are searched (people sort models into folders)


@dataclass(frozen=True)
class LocalGguf:
    """One model on disk. `path` is what llama.cpp opens (the first shard of a split set)."""

    path: Path
    files: tuple[Path, ...]  # every shard (one file for a single-file model), as they are named on disk
    size: int  # bytes, all shards together (blobs the cache shares between revisions counted once)
    quant: str  # "Q4_K_M", "BF16", ... or "" when neither the name nor the header says
    architecture: str  # general.architecture ("qwen3", "qwen3moe", ...), "" when the header cannot be read
    name: str  # general.name, else the file name without .gguf
    where: str  # MODELS_FOLDER or HF_CACHE
    catalog_ref: str | None = None  # "qwen3-8b:Q4_K_M" when the file is that catalog quant
    repo: str | None = None  # the Hugging Face repo, for a file in the Hugging Face cache
    problem: str | None = None  # why it cannot be opened as it is (an incomplete split set, a damaged header)

    @property
    def in_catalog(self) -> bool:
        return self.catalog_ref is not None

    @property
    def in_models_folder(self) -> bool:
        return self.where == MODELS_FOLDER

    @property
    def in_hf_cache(self) -> bool:
        return self.where == HF_CACHE

    @property
    def split(self) -> bool:
        return len(self.files) > 1

    @property
    def usable(self) -> bool:
        return self.problem is None


def hf_cache_dir() -> Path:
    """Where huggingface_hub keeps its downloads, from the environment at call time (the library reads it once,
    at import): HF_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub or ~/.cache/huggingface/hub."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "huggingface" / "hub"


def find_local_ggufs(models_folder: Path | None = None, hf_cache: Path | None = None, *,
                     models: dict[str, CatalogModel] | None = None, include_hf_cache: bool = True) -> list[LocalGguf]:
    """Every GGUF model in the models folder (and below it), then every one in the Hugging Face cache, each
    split set once. `models`: the catalog to match against (default: the shipped one plus the user's; a
    broken user catalog only means no file is marked as a catalog quant)."""
    folder = models_folder if models_folder is not None else models_dir()
    catalog = _catalog_names(models)
    found = [_describe(files, MODELS_FOLDER, catalog.get(files[0].name.lower()))
             for files in _sets(_walk(folder))]
    if include_hf_cache:
        for repo, files in _cache_sets(hf_cache if hf_cache is not None else hf_cache_dir()):
            ref = catalog.get(f"{repo.lower()}/{files[0].name.lower()}")
            found.append(_describe(files, HF_CACHE, ref, repo))
    return found


def folder_of(model: LocalGguf) -> Path:
    """The folder a model counts under in a disk-usage total: its own folder, or its repo's folder in the cache."""
    if model.in_hf_cache and model.repo:
        return model.files[0].parents[2]  # models--ORG--NAME/snapshots/REV/FILE -> models--ORG--NAME
    return model.files[0].parent


# --- the catalog's file names --------------------------------------------------------------------------------


def _catalog_names(models: dict[str, CatalogModel] | None) -> dict[str, str]:
    """File name -> catalog ref, by plain name (models folder) and by repo/name (Hugging Face cache); a split
    quant also by the name its merged file gets."""
    if models is None:
        from qwen_chat.catalog.loader import load_models

        try:
            models = load_models()
        except CatalogError:
            return {}
    names: dict[str, str] = {}
    for model in models.values():
        for quant in model.quants.values():
            first = PurePosixPath(quant.files[0].path).name
            ref = f"{model.id}:{quant.name}"
            names[first.lower()] = ref
            names[f"{model.repo.lower()}/{first.lower()}"] = ref
            if quant.split:
                names[default_output(Path(first)).name.lower()] = ref
    return names


# --- finding the files ---------------------------------------------------------------------------------------


def _walk(folder: Path) -> Iterator[Path]:
    """The .gguf files under `folder`, skipping hidden ones (downloads in progress are `.NAME.partial`)."""
    base = len(folder.parts)
    for root, dirs, files in os.walk(folder, onerror=None):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and len(Path(root).parts) - base < _MAX_DEPTH)
        for name in sorted(files):
            if name.lower().endswith(".gguf") and not name.startswith("."):
                path = Path(root) / name
                if path.is_file():
                    yield path


def _sets(paths: Iterable[Path]) -> list[tuple[Path, ...]]:
    """Group shards into their sets (the first shard first); single files stay alone. A set whose first shard
    is missing is still listed (by the lowest shard present) so that it can be seen and removed."""
    singles: list[tuple[Path, ...]] = []
    groups: dict[tuple[Path, str, str], list[Path]] = {}
    for path in paths:
        match = _SHARD.match(path.name)
        if match:
            groups.setdefault((path.parent, match["stem"], match["count"]), []).append(path)
        else:
            singles.append((path,))
    shard_sets = [tuple(sorted(files, key=lambda p: p.name)) for files in groups.values()]
    return sorted(singles + shard_sets, key=lambda files: str(files[0]).lower())


def _cache_sets(cache: Path) -> Iterator[tuple[str, tuple[Path, ...]]]:
    """(repo, files) for each model in the cache's snapshots: `models--ORG--NAME/snapshots/REV/...`. The same
    blob in two revisions is one file; the newest snapshot folder's name for it is kept."""
    try:
        repos = sorted(p for p in cache.iterdir() if p.name.startswith("models--") and p.is_dir())
    except OSError:
        return
    for repo_dir in repos:
        repo = repo_dir.name.removeprefix("models--").replace("--", "/")
        seen: set[str] = set()
        paths = []
        for snapshot in _newest_first(repo_dir / "snapshots"):
            for path in _walk(snapshot):
                blob = os.path.realpath(path)
                if blob not in seen:  # only links whose blob exists: _walk's is_file follows them
                    seen.add(blob)
                    paths.append(path)
        for files in _sets(paths):
            yield repo, files


def _newest_first(folder: Path) -> list[Path]:
    try:
        return sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return []


# --- reading one model ---------------------------------------------------------------------------------------


def _describe(files: tuple[Path, ...], where: str, catalog_ref: str | None, repo: str | None = None) -> LocalGguf:
    size = sum(_size(f) for f in files)
    problem = _split_problem(files)
    arch = name = ""
    file_type = None
    try:
        with files[0].open("rb") as f:
            meta = read_header(f).metadata
        arch, name, file_type = str(meta.get("general.architecture", "")), str(meta.get("general.name", "")), \
            meta.get("general.file_type")
    except (OSError, HeaderError) as exc:
        problem = problem or f"cannot read its GGUF header ({exc})"
    return LocalGguf(path=files[0], files=files, size=size, quant=quant_of(files[0].name, file_type),
                     architecture=arch, name=name or _stem(files[0].name), where=where, catalog_ref=catalog_ref,
                     repo=repo, problem=problem)


def quant_of(file_name: str, file_type: object = None) -> str:
    """The quant a file's name says (`...-Q4_K_M.gguf` -> "Q4_K_M"), else its header's general.file_type."""
    stem = _stem(file_name)
    found = _QUANT_IN_NAME.findall(stem)
    if found:
        return str(found[-1]).upper()
    return _FILE_TYPES.get(file_type, "") if isinstance(file_type, int) else ""


def _stem(file_name: str) -> str:
    match = _SHARD.match(file_name)
    return match["stem"] if match else file_name.removesuffix(".gguf").removesuffix(".GGUF")


def _split_problem(files: tuple[Path, ...]) -> str | None:
    match = _SHARD.match(files[0].name)
    if not match:
        return None
    count = int(match["count"])
    have = {int(m["index"]) for m in (_SHARD.match(f.name) for f in files) if m}
    missing = [i for i in range(1, count + 1) if i not in have]
    if not missing:
        return None
    shown = ", ".join(str(i) for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
    return f"incomplete split set: shard{'s' if len(missing) > 1 else ''} {shown} of {count} missing"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
