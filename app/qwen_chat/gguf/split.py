"""Merge a split GGUF model (`NAME-00001-of-0000N.gguf` ...) into one file, streaming and safely.

The output has the layout `llama-gguf-split --merge` writes: a GGUF v3 header holding every metadata record of
shard 1 in its original order and type, copied as raw bytes (the vocabulary is never re-encoded), except
`split.count`, which moves to the end as uint16 0 (see gguf_merge_plan._merged_metadata); then every
shard's tensor infos in shard order with offsets for the merged data section; then the tensor data, each
tensor aligned to `general.alignment` (32 by default) with zero padding after it.

Safety: the shards are checked before anything is written; the merged file is written under a temporary
name in the output folder, synced, re-read and checked, and only then renamed into place. The shards are
kept (as llama-gguf-split keeps them), or deleted only after that when asked to (`pull` deletes the shards it
downloaded). Any failure or cancel before the rename removes the temporary file and leaves the shards as
they were; a Ctrl-C at any step raises MergeInterrupted, whose message is read back from the disk.

The checks and the layout are worked out first, in gguf_merge_plan.py; this module carries the plan out.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qwen_chat.gguf.files import SPLIT_COUNT, SPLIT_NO, SPLIT_TENSORS
from qwen_chat.gguf.header import HeaderError, read_header
from qwen_chat.gguf.merge_plan import (
    MergeError,
    MergePlan,
    align,
    default_output,
    plan_merge,
)
from qwen_chat.system.durable import fsync_folder

CHUNK = 8 << 20  # bytes per read/write while copying tensor data
_ZEROS = bytes(4096)


@dataclass(frozen=True)
class MergeResult:
    path: Path  # the file to load: the merged file, or the first shard when the merge was skipped
    merged: bool  # False: skipped for lack of disk space (llama.cpp loads the shards from the first one)
    shards_deleted: bool
    message: str


class _Cancelled(Exception):
    pass


class MergeInterrupted(MergeError):
    """Ctrl-C stopped the merge; the message says what is on the disk (read back from it when it stopped)."""


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 10**8 else f"{n / 1e6:.2f} MB"


# --- writing -------------------------------------------------------------------------------------------------


def _write_all(fd: int, data: memoryview | bytes) -> None:
    """Every write of the merged file goes through here."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


_FALLBACK_ERRNOS = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}
_use_copy_file_range = hasattr(os, "copy_file_range")


def _copy_chunk(src_fd: int, dst_fd: int, src_offset: int, n: int, buffer: memoryview) -> int:
    """Copy up to `n` tensor bytes from `src_offset` to the end of the output; returns the count (0: source
    ended). In-kernel (copy_file_range) where possible, else a read into `buffer` and a write."""
    global _use_copy_file_range
    if _use_copy_file_range:
        try:
            return os.copy_file_range(src_fd, dst_fd, n, src_offset)
        except OSError as exc:
            if exc.errno not in _FALLBACK_ERRNOS:
                raise
            _use_copy_file_range = False
    got = os.preadv(src_fd, [buffer[:n]], src_offset)
    _write_all(dst_fd, buffer[:got])
    return got


WRITEBACK_STEP = 64 << 20


class _Writeback:
    """Hand written data to the disk as the copy goes (Linux sync_file_range), not all at the final fsync.

    The merge must be on stable storage before its rename. Asking for the writes early (without waiting for
    them) keeps the disk busy from the first chunk on, so the final fsync only waits for the tail.
    """

    _WRITE = 2  # SYNC_FILE_RANGE_WRITE: start writeback of dirty pages in the range, do not wait

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.started = 0  # writeback has been asked for everything before this offset
        self._call = _sync_file_range()

    def written(self, end: int) -> None:
        if self._call is None or end - self.started < WRITEBACK_STEP:
            return
        if self._call(self.fd, self.started, end - self.started, self._WRITE) != 0:
            self._call = None  # not supported here: the final fsync does it all
            return
        self.started = end


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


def _copy_data(plan: MergePlan, fd: int, progress: Callable[[int, int], None] | None,
               cancel: threading.Event | None) -> None:
    chunk = CHUNK
    buffer = memoryview(bytearray(chunk))  # only used without copy_file_range; memory stays at one chunk
    done = len(plan.header_bytes)
    _write_all(fd, plan.header_bytes)
    writeback = _Writeback(fd)
    if progress:
        progress(done, plan.total_size)
    sources = [os.open(p, os.O_RDONLY) for p in plan.shards]
    try:
        for src in sources:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(src, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        for copy in plan.copies:
            offset, remaining = copy.src_offset, copy.n_bytes
            while remaining:
                if cancel is not None and cancel.is_set():
                    raise _Cancelled
                got = _copy_chunk(sources[copy.shard], fd, offset, min(chunk, remaining), buffer)
                if not got:
                    raise MergeError(f"{plan.shards[copy.shard].name} got shorter during the merge; "
                                     "nothing was merged. Check the file and try again.")
                offset += got
                remaining -= got
                done += got
                writeback.written(done)
                if progress:
                    progress(done, plan.total_size)
            if copy.padding:
                _write_all(fd, _ZEROS[: copy.padding] if copy.padding <= len(_ZEROS) else bytes(copy.padding))
                done += copy.padding
    finally:
        for src in sources:
            os.close(src)


def _verify(plan: MergePlan, path: Path) -> None:
    size = path.stat().st_size
    problem = None
    with path.open("rb") as f:
        if f.read(len(plan.header_bytes)) != plan.header_bytes:
            problem = "its header is not what was written"
        else:
            f.seek(0)
            header = read_header(f)
            meta = header.metadata
            if len(header.tensors) != len(plan.tensors):
                problem = f"it lists {len(header.tensors)} tensors, expected {len(plan.tensors)}"
            elif any((a.name, a.shape, a.ggml_type, a.offset, a.n_bytes) != (b.name, b.shape, b.ggml_type, b.offset,
                                                                               b.n_bytes)
                     for a, b in zip(header.tensors, plan.tensors, strict=True)):
                problem = "its tensor table differs from the shards'"
            elif header.data_offset != len(plan.header_bytes):
                problem = "its data section starts at the wrong place"
            elif (meta.get(SPLIT_NO), meta.get(SPLIT_COUNT), meta.get(SPLIT_TENSORS)) != (0, 0, len(plan.tensors)):
                problem = "its split.* keys are wrong"
            elif size != plan.total_size or align(header.data_end, plan.alignment) != size:
                problem = f"it is {size:,} bytes, expected {plan.total_size:,}"
    if problem:
        raise MergeError(f"the merged file failed its check ({problem}); it was removed and the shards were kept. "
                         "Try again; if it fails again, load the model from the first shard.")


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        pass  # reported by the caller's message at worst; never raise over the real error


def merge_shards(first_shard: Path, out: Path | None = None, *, delete_shards: bool = False,
                 progress: Callable[[int, int], None] | None = None,
                 cancel: threading.Event | None = None) -> MergeResult:
    """Merge a split model into one file; see the module docstring for the guarantees. The shards are kept
    unless `delete_shards` (then deleted only after the merged file is verified and in place)."""
    first_shard = Path(first_shard).expanduser()
    try:
        plan = plan_merge(first_shard)
    except KeyboardInterrupt:
        raise MergeInterrupted("Merge interrupted. Nothing was lost: nothing was written yet, and the shards are "
                               "untouched. Run it again to merge.") from None
    out = Path(out).expanduser() if out is not None else default_output(first_shard)
    if out.exists():
        raise MergeError(
            f"{out} already exists; refusing to overwrite it. If it is an earlier merge of this model, use it "
            "(or delete it to merge again); otherwise choose another output path."
        )
    tmp = out.parent / f".{out.name}.partial"
    try:
        return _merge(plan, tmp, out, first_shard, delete_shards, progress, cancel)
    except KeyboardInterrupt:
        # the state is read back from the disk, so the message is true whichever step Ctrl-C interrupted
        raise MergeInterrupted(_after_interrupt(plan, tmp, out)) from None


def _merge(plan: MergePlan, tmp: Path, out: Path, first_shard: Path, delete_shards: bool,
           progress: Callable[[int, int], None] | None, cancel: threading.Event | None) -> MergeResult:
    folder = out.parent
    _remove(tmp)  # left by an interrupted earlier attempt at this same merge
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise MergeError(f"cannot use the output folder {folder}: {exc.strerror or exc}") from None
    if free < plan.total_size:
        return MergeResult(
            path=first_shard, merged=False, shards_deleted=False,
            message=(f"Not merged: the merged file needs {_gb(plan.total_size)} ({plan.total_size:,} bytes) but "
                     f"only {_gb(free)} ({free:,} bytes) is free in {folder}, and the shards "
                     f"({_gb(plan.shard_bytes)}) must stay until the merged file is verified. Load the model "
                     f"directly from its first shard: {first_shard}"),
        )
    _write_merged(plan, tmp, out, progress, cancel, free=free, first_shard=first_shard)
    fsync_folder(folder)
    return _merged(plan, out, delete_shards)


def _write_merged(plan: MergePlan, tmp: Path, out: Path, progress: Callable[[int, int], None] | None,
                  cancel: threading.Event | None, *, free: int, first_shard: Path) -> None:
    """Write, sync, check and rename into place; any failure removes `tmp` and says the shards are untouched
    (a Ctrl-C is passed on: merge_shards says what it left)."""
    fd = -1
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        _copy_data(plan, fd, progress, cancel)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        _verify(plan, tmp)
        _rename(tmp, out)
    except BaseException as exc:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        _remove(tmp)
        safe = f"Nothing was lost: the partial file was removed and the {len(plan.shards)} shards are untouched."
        if isinstance(exc, MergeError | KeyboardInterrupt):
            raise
        if isinstance(exc, _Cancelled):
            raise MergeError(f"Merge cancelled. {safe}") from None
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise MergeError(
                f"The disk is full: the merged file needs {_gb(plan.total_size)} ({plan.total_size:,} bytes) in "
                f"{tmp.parent}; {_gb(free)} was free when the merge started. {safe} Free some space and merge "
                f"again, or load the model directly from its first shard: {first_shard}"
            ) from None
        if isinstance(exc, HeaderError):
            raise MergeError(f"the merged file failed its check ({exc}). {safe}") from None
        if isinstance(exc, OSError):
            raise MergeError(f"Merge failed writing {tmp}: {exc.strerror or exc}. {safe}") from None
        raise


def _rename(tmp: Path, out: Path) -> None:
    """The one step that makes the merged file appear: atomic, so `out` is either absent or complete."""
    os.replace(tmp, out)


def _delete(shard: Path) -> None:
    shard.unlink()


def _merged(plan: MergePlan, out: Path, delete_shards: bool) -> MergeResult:
    """The merged file is in place: delete the shards when asked to."""
    note = f"Merged {len(plan.shards)} shards into {out} ({_gb(plan.total_size)}, {len(plan.tensors)} tensors)."
    if not delete_shards:
        return MergeResult(path=out, merged=True, shards_deleted=False, message=note + " The shards were kept.")
    failed = []
    for shard in plan.shards:
        try:
            _delete(shard)
        except FileNotFoundError:
            pass
        except OSError as exc:
            failed.append(f"{shard.name} ({exc.strerror or exc})")
    if not failed:
        fsync_folder(out.parent)
    note += " The shards were deleted." if not failed else f" Could not delete: {', '.join(failed)}."
    return MergeResult(path=out, merged=True, shards_deleted=not failed, message=note)


def _after_interrupt(plan: MergePlan, tmp: Path, out: Path) -> str:
    """What a Ctrl-C left, as found on the disk now (not as the code believed a moment ago)."""
    _remove(tmp)
    n = len(plan.shards)
    if not out.exists():  # the rename never happened, so no shard was deleted
        partial = "the partial file was removed" if not tmp.exists() else f"remove the partial file {tmp}"
        return f"Merge interrupted. Nothing was lost: nothing was merged, {partial}, and the {n} shards are " \
               "untouched. Run it again to merge."
    left = [s for s in plan.shards if s.exists()]
    gone = [s for s in plan.shards if s not in left]
    done = f"{out} is complete and verified"  # it only ever appears by the rename after the check
    if not gone:
        return f"Merge interrupted after the merge was done: {done}, and the {n} shards are still there " \
               "(the merged file does not need them)."
    if not left:
        return f"Merge interrupted after the merge was done: {done}, and the {n} shards were deleted."
    return (f"Merge interrupted while deleting the shards: {done}. Deleted: {', '.join(s.name for s in gone)}; "
            f"still there: {', '.join(s.name for s in left)} (the merged file does not need them: delete them).")
