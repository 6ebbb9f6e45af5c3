"""`qwen-chat list` (the GGUFs on this disk and the space they take) and `qwen-chat rm MODEL` (delete one).

`rm` deletes only inside the models folder unless it is given an explicit path, asks first (`--yes` skips the
question; without a terminal it refuses rather than wait), removes every shard of a split set together with
any download left half-way of it, and refuses a file another process has mapped (a running chat: llama.cpp
maps its model) where the system can tell.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from qwen_chat.catalog.entries import CatalogError
from qwen_chat.cli import output
from qwen_chat.cli.output import is_terminal, one_line, show
from qwen_chat.hub.download_state import VERIFIED_FILE, load_verified
from qwen_chat.hub.local_models import MODELS_FOLDER, LocalGguf, find_local_ggufs, folder_of, hf_cache_dir
from qwen_chat.system.file_users import processes_using
from qwen_chat.system.paths import models_dir

_SHARD = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n < 10e9 else f"{n / 1e9:.1f} GB"


def run_list() -> int:
    found = find_local_ggufs()
    folder = models_dir()
    if not found:
        show(f"No GGUF models on this disk: the models folder ({folder}) and the Hugging Face cache "
             f"({hf_cache_dir()}) hold none. `qwen-chat` offers downloads; `qwen-chat pull MODEL` fetches one.")
    by_folder: dict[Path, list[LocalGguf]] = {}
    for model in found:
        by_folder.setdefault(folder_of(model), []).append(model)
    for where, models in by_folder.items():
        show(f"{one_line(str(where))} ({models[0].where}): {len(models)} model{'s' if len(models) > 1 else ''}, "
             f"{_gb(sum(m.size for m in models))}")
        for model in models:
            show("  " + _row(model))
    partial = _partial_bytes(folder)
    if partial:
        show(f"{folder}: {_gb(partial)} in downloads not finished (resumed by the next pull; `qwen-chat rm` of the "
             "model removes them)")
    if found:
        total, shared = _disk_total(found)
        note = f", of which {_gb(shared)} counted once (hard links between folders)" if shared else ""
        show(f"total: {len(found)} model{'s' if len(found) > 1 else ''}, {_gb(total)} on disk{note}")
    return 0


def _row(model: LocalGguf) -> str:
    shards = f", {len(model.files)} shards" if model.split else ""
    known = model.catalog_ref or "not in the catalog"
    problem = f"  [{model.problem}]" if model.problem else ""
    name = model.path.name if model.in_models_folder else f"{model.repo}: {model.path.name}"
    return (f"{one_line(name):56} {model.quant or '?':10} {_gb(model.size):>9}  {one_line(known)}{shards}"
            f"{one_line(problem)}")


def _disk_total(found: list[LocalGguf]) -> tuple[int, int]:
    """Bytes on disk, each inode once (a pull links a file it finds in the Hugging Face cache), and how much of
    the listed sizes was such a second name."""
    seen: set[tuple[int, int]] = set()
    total = listed = 0
    for model in found:
        for path in model.files:
            try:
                st = path.stat()
            except OSError:
                continue
            listed += st.st_size
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total, listed - total


def _partial_bytes(folder: Path) -> int:
    with contextlib.suppress(OSError):
        return sum(p.stat().st_size for p in folder.glob(".*.gguf.partial"))
    return 0


# --- rm ------------------------------------------------------------------------------------------------------


class RefusedRemoval(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def run_rm(ref: str, yes: bool = False, ask: Callable[[str], str] = input) -> int:
    try:
        model = find_target(ref)
        _check_not_in_use(model)
    except RefusedRemoval as exc:
        output.error(exc)
        return exc.code
    what = f"{one_line(str(model.path))}" + (f" and its {len(model.files) - 1} other shards" if model.split else "")
    if not yes:
        if ask is input and not (is_terminal(sys.stdin) and is_terminal(sys.stdout)):
            output.error(f"not deleting {what} without asking, and there is no terminal to ask on: add --yes")
            return 2
        if ask(f"Delete {what} ({_gb(model.size)})? [y/N] ").strip().lower() not in ("y", "yes"):
            show("Nothing was deleted.")
            return 0
    failed = _delete(model)
    if failed:
        output.error("could not delete " + "; ".join(failed))
        return 1
    show(f"Deleted {what}: {_gb(model.size)} freed.")
    return 0


def find_target(ref: str) -> LocalGguf:
    """The model `ref` names: an explicit path (anywhere), else a catalog id or a file name in the models folder."""
    path = Path(ref).expanduser()
    folder = models_dir()
    if "/" in ref or os.sep in ref or (path.suffix == ".gguf" and path.is_file() and not (folder / ref).is_file()):
        return _by_path(path)
    local = find_local_ggufs(include_hf_cache=False)
    wanted = ref.lower().removesuffix(".gguf")
    for model in local:
        names = {f.name.lower().removesuffix(".gguf") for f in model.files}
        if wanted in names or wanted == _stem(model):
            return model
    matches = _by_catalog(ref, local)
    if len(matches) == 1:
        return matches[0]
    if matches:
        refs = ", ".join(m.catalog_ref or m.path.name for m in matches)
        raise RefusedRemoval(f"{ref} matches {len(matches)} downloaded quants ({refs}); name one", 2)
    raise RefusedRemoval(f"{ref} is not in the models folder ({folder}); `qwen-chat list` shows what is. A file "
                         "elsewhere is deleted only when given by its path.")


def _stem(model: LocalGguf) -> str:
    from qwen_chat.gguf.merge_plan import default_output

    return default_output(model.path).name.lower().removesuffix(".gguf")


def _by_catalog(ref: str, local: list[LocalGguf]) -> list[LocalGguf]:
    from qwen_chat.catalog.entries import parse_model_ref

    try:
        model_id, quant = parse_model_ref(ref)
    except CatalogError:
        return []
    return [m for m in local if m.catalog_ref and m.catalog_ref.split(":")[0] == model_id
            and (quant is None or m.catalog_ref.split(":", 1)[1].upper() == quant.upper())]


def _by_path(path: Path) -> LocalGguf:
    if not path.is_file():
        raise RefusedRemoval(f"no such file: {path}")
    if path.suffix.lower() != ".gguf":
        raise RefusedRemoval(f"{path} is not a .gguf file; rm deletes models only")
    cache = os.path.realpath(hf_cache_dir())
    if os.path.realpath(path.parent).startswith(cache + os.sep) or os.path.abspath(path).startswith(cache + os.sep):
        raise RefusedRemoval(f"{path} is in the Hugging Face cache, which huggingface_hub manages: delete it with "
                             "`hf cache delete` (or `huggingface-cli delete-cache`)")
    match = _SHARD.match(path.name)
    files: tuple[Path, ...] = (path,)
    if match:  # any shard names its whole set
        files = tuple(sorted(path.parent.glob(f"{glob.escape(match['stem'])}-[0-9][0-9][0-9][0-9][0-9]-of-"
                                              f"{match['count']}.gguf")))
    where = MODELS_FOLDER if path.resolve().is_relative_to(models_dir().resolve()) else "folder"
    return LocalGguf(files[0], files, sum(f.stat().st_size for f in files), "", "", path.stem, where)


def _check_not_in_use(model: LocalGguf) -> None:
    users = processes_using(model.files)
    if users is None:
        output.note("warning: this system cannot tell whether a running qwen-chat has this model open; if one has, "
                    "it keeps working from the deleted file until it closes")
    elif users:
        shown = ", ".join(f"{name} (pid {pid})" for pid, name in users[:3])
        raise RefusedRemoval(f"{model.path.name} is open in {shown}: close that window first (or load another "
                             "model in it with F3), then run rm again")


def _delete(model: LocalGguf) -> list[str]:
    failed = []
    for path in model.files:
        partial = path.with_name(f".{path.name}.partial")
        for extra in (partial, partial.with_name(partial.name + ".json")):
            with contextlib.suppress(OSError):
                extra.unlink()
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            failed.append(f"{path} ({exc.strerror or exc})")
    _forget_verified(model)
    return failed


def _forget_verified(model: LocalGguf) -> None:
    """Drop the deleted files from the models folder's record of hashed files (only a cache: best effort)."""
    import json

    folder = model.path.parent
    verified = load_verified(folder)
    names = {f.name for f in model.files}
    if not names & set(verified):
        return
    kept = {k: v for k, v in verified.items() if k not in names}
    tmp = folder / f".{VERIFIED_FILE}.tmp"
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps(kept, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, folder / VERIFIED_FILE)
