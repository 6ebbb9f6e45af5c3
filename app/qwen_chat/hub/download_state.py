"""What a download finds and leaves in the models folder between runs.

A file in progress is `.<name>.partial`, with a sidecar `.<name>.partial.json` naming the repo, commit, size
and sha256 it belongs to, so a later run resumes it only when it is the very same file. Finished files are
listed in `.verified.json` with the size and mtime they had when their hash was checked, so a finished file is
hashed at most once. A split quant merged earlier is found by its merged file alone (its shards are gone).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from qwen_chat.catalog.entries import Quant
from qwen_chat.hub import client as hub
from qwen_chat.hub.client import RemoteFile

VERIFIED_FILE = ".verified.json"


# --- the record of files already verified ---------------------------------------------------------------------


def load_verified(dest_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((dest_dir / VERIFIED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_verified(dest_dir: Path, path: Path, sha256: str) -> None:
    data = load_verified(dest_dir)
    st = path.stat()
    data[path.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}
    tmp = dest_dir / f".{VERIFIED_FILE}.tmp"
    with contextlib.suppress(OSError):  # only a cache: failing to write it costs a re-hash next time
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, dest_dir / VERIFIED_FILE)


# --- partial files ---------------------------------------------------------------------------------------------


def download_paths(dest_dir: Path, remote: RemoteFile) -> tuple[Path, Path, Path]:
    """(final file, partial file, its sidecar); rejects names that would escape dest_dir."""
    name = PurePosixPath(hub.safe_path(remote.path)).name
    return dest_dir / name, dest_dir / f".{name}.partial", dest_dir / f".{name}.partial.json"


def sidecar(repo: str, remote: RemoteFile, commit: str) -> dict[str, Any]:
    return {"repo": repo, "commit": commit, "path": remote.path, "size": remote.size, "sha256": remote.sha256}


def resumable_bytes(repo: str, remote: RemoteFile, commit: str, partial: Path, meta: Path) -> int:
    """Bytes of a partial that belongs to this very file and revision; 0 otherwise."""
    try:
        if json.loads(meta.read_text(encoding="utf-8")) != sidecar(repo, remote, commit):
            return 0
        size = partial.stat().st_size
    except (OSError, ValueError):
        return 0
    return size if size <= remote.size else 0


def remaining_bytes(repo: str, remote: RemoteFile, commit: str, dest_dir: Path) -> int:
    """What still has to come over the network for this file (for the disk-space check of a whole pull)."""
    final, partial, meta = download_paths(dest_dir, remote)
    with contextlib.suppress(OSError):
        if final.stat().st_size == remote.size:
            return 0
    return remote.size - resumable_bytes(repo, remote, commit, partial, meta)


def flush_partial(f: Any, done: int) -> None:
    """Make the partial file hold exactly the hashed bytes, on disk."""
    try:
        f.flush()
        os.fsync(f.fileno())
    except OSError:
        pass
    with contextlib.suppress(OSError):
        f.truncate(done)


# --- a quant already on disk ---------------------------------------------------------------------------------


def local_copy(quant: Quant, dest_dir: Path) -> list[Path] | None:
    """Offline: the quant's files when all are on disk (with the catalog's size when it is exact)."""
    paths = [dest_dir / PurePosixPath(f.path).name for f in quant.files]
    for f, path in zip(quant.files, paths, strict=True):
        if not path.is_file() or (not quant.estimated and path.stat().st_size != f.size):
            return None
    return paths


def verified_copy(quant: Quant, dest_dir: Path) -> list[Path] | None:
    """The quant's files when every one was verified against the hub's sha256 by an earlier pull and is unchanged
    since (the size and mtime it had then); else None. Needs no network: a finished model is not listed again."""
    verified = load_verified(dest_dir)
    paths = [dest_dir / PurePosixPath(f.path).name for f in quant.files]
    for f, path in zip(quant.files, paths, strict=True):
        record = verified.get(path.name)
        try:
            st = path.stat()
        except OSError:
            return None
        if not (isinstance(record, dict) and record.get("sha256") and record.get("size") == st.st_size
                and record.get("mtime_ns") == st.st_mtime_ns):
            return None
        if (not quant.estimated and st.st_size != f.size) or (f.sha256 and record["sha256"] != f.sha256):
            return None  # the catalog names another file of that name
    return paths


def merged_copy(quant: Quant, dest_dir: Path) -> Path | None:
    """A split quant already merged into one verified file (checked by reading its header, not its data)."""
    if not quant.split:
        return None
    from qwen_chat.gguf.files import ModelFileError, read_model_info
    from qwen_chat.gguf.merge_plan import default_output

    path = default_output(dest_dir / PurePosixPath(quant.files[0].path).name)
    if not path.is_file():
        return None
    try:
        read_model_info(path)  # magic, header, not truncated
    except ModelFileError:
        return None
    return path
