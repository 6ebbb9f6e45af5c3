"""Merge a split GGUF model (`NAME-00001-of-0000N.gguf` ...) into one file, streaming and safely.

The output has the layout `llama-gguf-split --merge` writes: a GGUF v3 header holding every metadata key of
shard 1 in its original order and type (the vocabulary is copied as raw bytes, never re-encoded), except
`split.no` = 0 and `split.count` = 0 (uint16) and `split.tensors.count` (int32) = all tensors; then every
shard's tensor infos in shard order with offsets for the merged data section; then the tensor data, each
tensor aligned to `general.alignment` (32 by default) with zero padding after it.

Safety: the shards are checked before anything is written; the merged file is written under a temporary
name in the output folder, synced, re-read and checked, and only then renamed into place. The shards are
deleted only after that (unless asked to keep them). Any failure, cancel or Ctrl-C removes the temporary
file and leaves the shards as they were.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import struct
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qwen_chat.models.gguf_files import ModelFileError, shard_set
from qwen_chat.models.gguf_header import GGUFHeader, HeaderError, TensorInfo, read_header

CHUNK = 8 << 20  # bytes per read/write while copying tensor data
GGUF_VERSION = 3
_SHARD_SUFFIX = re.compile(r"-\d{5}-of-\d{5}(?=\.gguf$)")
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY, _UINT16, _INT32 = 8, 9, 2, 5
_SPLIT_NO, _SPLIT_COUNT, _SPLIT_TENSORS = "split.no", "split.count", "split.tensors.count"
_ZEROS = bytes(4096)


class MergeError(Exception):
    """The merge did not happen; the message says why and what to do. The shards are never harmed."""


@dataclass(frozen=True)
class MergeResult:
    path: Path  # the file to load: the merged file, or the first shard when the merge was skipped
    merged: bool  # False: skipped for lack of disk space (llama.cpp loads the shards from the first one)
    shards_deleted: bool
    message: str


class _Cancelled(Exception):
    pass


@dataclass(frozen=True)
class _Copy:
    shard: int  # index into the plan's shards
    src_offset: int  # absolute offset in the shard file
    n_bytes: int
    padding: int  # zero bytes written after it


@dataclass(frozen=True)
class _Plan:
    shards: tuple[Path, ...]
    header_bytes: bytes  # the merged file's header, padded to the data section
    tensors: tuple[TensorInfo, ...]  # with merged offsets
    copies: tuple[_Copy, ...]
    total_size: int
    alignment: int

    @property
    def shard_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.shards)


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 10**8 else f"{n / 1e6:.2f} MB"


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def default_output(first_shard: Path) -> Path:
    """`NAME-00001-of-0000N.gguf` -> `NAME.gguf` in the same folder."""
    return first_shard.with_name(_SHARD_SUFFIX.sub("", first_shard.name))


# --- raw metadata walker -------------------------------------------------------------------------------------


def _skip_value(buf: bytes, pos: int, vtype: int) -> int:
    """Position just after a value of type `vtype` starting at `pos`."""
    if vtype in _SCALAR_SIZES:
        return pos + _SCALAR_SIZES[vtype]
    if vtype == _STRING:
        (length,) = struct.unpack_from("<Q", buf, pos)
        return pos + 8 + length
    if vtype == _ARRAY:
        item_type, count = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if item_type in _SCALAR_SIZES:
            return pos + count * _SCALAR_SIZES[item_type]
        if item_type == _STRING:
            unpack = struct.Struct("<Q").unpack_from
            for _ in range(count):
                pos += 8 + unpack(buf, pos)[0]
            return pos
        for _ in range(count):
            pos = _skip_value(buf, pos, item_type)
        return pos
    raise HeaderError(f"unknown value type {vtype} at byte {pos:,}")


def _kv_records(buf: bytes) -> list[tuple[str, int, int]]:
    """(key, start, end) of every key/value record in a GGUF header held in `buf`, in file order."""
    (n_kv,) = struct.unpack_from("<Q", buf, 16)
    pos = 24
    records = []
    for _ in range(n_kv):
        start = pos
        (key_len,) = struct.unpack_from("<Q", buf, pos)
        key = buf[pos + 8 : pos + 8 + key_len].decode("utf-8", "replace")
        pos += 8 + key_len
        (vtype,) = struct.unpack_from("<I", buf, pos)
        pos = _skip_value(buf, pos + 4, vtype)
        if pos > len(buf):
            raise HeaderError(f"key {key} runs past the header")
        records.append((key, start, pos))
    return records


def _gguf_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _kv_bytes(key: str, vtype: int, value: int) -> bytes:
    fmt = "<H" if vtype == _UINT16 else "<i"
    return _gguf_string(key) + struct.pack("<I", vtype) + struct.pack(fmt, value)


def _tensor_info_bytes(t: TensorInfo) -> bytes:
    return (_gguf_string(t.name) + struct.pack("<I", len(t.shape)) + struct.pack(f"<{len(t.shape)}Q", *t.shape)
            + struct.pack("<IQ", t.ggml_type, t.offset))


# --- planning and checks -------------------------------------------------------------------------------------


def _read_shard(path: Path) -> tuple[GGUFHeader, int]:
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise MergeError(f"{path.name} is not a GGUF file (bad magic). Download this shard again.")
            f.seek(0)
            header = read_header(f)
    except HeaderError as exc:
        raise MergeError(f"{path.name} is damaged ({exc}). Download this shard again.") from None
    except OSError as exc:
        raise MergeError(f"cannot read {path}: {exc.strerror or exc}") from None
    if header.data_end > size:
        raise MergeError(
            f"{path.name} is truncated: {size:,} bytes on disk, its header describes {header.data_end:,}. "
            "Download this shard again; nothing was merged."
        )
    return header, size


def _plan(first_shard: Path) -> _Plan:
    first_shard = Path(first_shard).expanduser()
    try:
        shards = shard_set(first_shard)
    except ModelFileError as exc:
        raise MergeError(str(exc)) from None
    if not _SHARD_SUFFIX.search(first_shard.name):
        raise MergeError(f"{first_shard.name} is not a split model (no -00001-of-0000N in its name): "
                         "there is nothing to merge.")
    n = len(shards)
    headers = [_read_shard(p)[0] for p in shards]
    meta0 = headers[0].metadata
    if meta0.get(_SPLIT_COUNT) != n:
        raise MergeError(f"{shards[0].name} says split.count = {meta0.get(_SPLIT_COUNT)!r} but its name says "
                         f"{n} shards: the file was renamed or belongs to another model.")
    total = meta0.get(_SPLIT_TENSORS)
    seen: set[str] = set()
    for index, (path, header) in enumerate(zip(shards, headers, strict=True)):
        meta = header.metadata
        foreign = f"{path.name} does not belong to this split model ({shards[0].name})"
        fix = "; put the right shard in its place (download it again)."
        if meta.get(_SPLIT_NO) != index:
            raise MergeError(f"{foreign}: its split.no is {meta.get(_SPLIT_NO)!r}, expected {index}{fix}")
        if meta.get(_SPLIT_COUNT) != n:
            raise MergeError(f"{foreign}: it is part of a {meta.get(_SPLIT_COUNT)!r}-shard set{fix}")
        if meta.get(_SPLIT_TENSORS) != total:
            raise MergeError(f"{foreign}: it says the model has {meta.get(_SPLIT_TENSORS)!r} tensors, "
                             f"shard 1 says {total!r}{fix}")
        for key in ("general.architecture", "general.name"):
            if index and key in meta and meta[key] != meta0.get(key):
                raise MergeError(f"{foreign}: its {key} is {meta[key]!r}, shard 1 has {meta0.get(key)!r}{fix}")
        for t in header.tensors:
            if t.name in seen:
                raise MergeError(f"{foreign}: tensor {t.name} appears in an earlier shard too{fix}")
            seen.add(t.name)
    if len(seen) != total:
        raise MergeError(f"the shards of {shards[0].name} hold {len(seen)} tensors but split.tensors.count says "
                         f"{total!r}: a shard is from another model or damaged. Download the set again.")
    alignment = meta0.get("general.alignment", 32)

    # shard 1's metadata, raw, with the three split.* values rewritten in place
    with shards[0].open("rb") as f:
        raw = f.read(headers[0].data_offset)
    try:
        records = _kv_records(raw)
    except (HeaderError, struct.error) as exc:
        raise MergeError(f"{shards[0].name} has a damaged header ({exc}). Download it again.") from None
    new_values = {_SPLIT_NO: (_UINT16, 0), _SPLIT_COUNT: (_UINT16, 0), _SPLIT_TENSORS: (_INT32, total)}
    kv = bytearray()
    for key, start, end in records:
        kv += _kv_bytes(key, *new_values[key]) if key in new_values else raw[start:end]

    tensors: list[TensorInfo] = []
    copies: list[_Copy] = []
    offset = 0
    for index, header in enumerate(headers):
        for t in header.tensors:
            size = t.n_bytes
            padded = _align(size, alignment)
            tensors.append(TensorInfo(t.name, t.shape, t.ggml_type, offset))
            copies.append(_Copy(index, header.data_offset + t.offset, size, padded - size))
            offset += padded
    head = bytearray(b"GGUF" + struct.pack("<IQQ", GGUF_VERSION, len(tensors), len(records)))
    head += kv
    for t in tensors:
        head += _tensor_info_bytes(t)
    head += bytes(_align(len(head), alignment) - len(head))
    return _Plan(shards, bytes(head), tuple(tensors), _coalesce(shards, copies), len(head) + offset, alignment)


def _coalesce(shards: tuple[Path, ...], copies: list[_Copy]) -> tuple[_Copy, ...]:
    """Join neighbouring tensors of a shard whose source padding is already zeros into one long copy:
    a few large in-kernel copies instead of one per tensor (the bytes written are the same)."""
    joined: list[_Copy] = []
    handles = [p.open("rb") for p in shards]
    try:
        for copy in copies:
            last = joined[-1] if joined else None
            if (last is not None and last.shard == copy.shard
                    and last.src_offset + last.n_bytes + last.padding == copy.src_offset
                    and os.pread(handles[last.shard].fileno(), last.padding, last.src_offset + last.n_bytes)
                    == bytes(last.padding)):
                joined[-1] = _Copy(copy.shard, last.src_offset, last.n_bytes + last.padding + copy.n_bytes,
                                   copy.padding)
            else:
                joined.append(copy)
    finally:
        for handle in handles:
            handle.close()
    return tuple(joined)


def merge_needed_bytes(first_shard: Path) -> int:
    """Size of the merged file (the free space a merge needs next to the shards)."""
    return _plan(Path(first_shard)).total_size


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


def _copy_data(plan: _Plan, fd: int, progress: Callable[[int, int], None] | None,
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


def _verify(plan: _Plan, path: Path) -> None:
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
            elif (meta.get(_SPLIT_NO), meta.get(_SPLIT_COUNT), meta.get(_SPLIT_TENSORS)) != (0, 0, len(plan.tensors)):
                problem = "its split.* keys are wrong"
            elif size != plan.total_size or _align(header.data_end, plan.alignment) != size:
                problem = f"it is {size:,} bytes, expected {plan.total_size:,}"
    if problem:
        raise MergeError(f"the merged file failed its check ({problem}); it was removed and the shards were kept. "
                         "Try again; if it fails again, load the model from the first shard.")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a folder; the rename itself is done
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        pass  # reported by the caller's message at worst; never raise over the real error


def merge_shards(first_shard: Path, out: Path | None = None, *, keep_shards: bool = False,
                 progress: Callable[[int, int], None] | None = None,
                 cancel: threading.Event | None = None) -> MergeResult:
    """Merge a split model into one file; see the module docstring for the guarantees."""
    first_shard = Path(first_shard).expanduser()
    plan = _plan(first_shard)
    out = Path(out).expanduser() if out is not None else default_output(first_shard)
    if out.exists():
        raise MergeError(
            f"{out} already exists; refusing to overwrite it. If it is an earlier merge of this model, use it "
            "(or delete it to merge again); otherwise choose another output path."
        )
    folder = out.parent
    tmp = folder / f".{out.name}.partial"
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

    fd = -1
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        _copy_data(plan, fd, progress, cancel)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        _verify(plan, tmp)
        os.replace(tmp, out)
    except BaseException as exc:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        _remove(tmp)
        safe = f"Nothing was lost: the partial file was removed and the {len(plan.shards)} shards are untouched."
        if isinstance(exc, MergeError):
            raise
        if isinstance(exc, _Cancelled):
            raise MergeError(f"Merge cancelled. {safe}") from None
        if isinstance(exc, KeyboardInterrupt):
            raise MergeError(f"Merge interrupted. {safe} Run it again to merge.") from exc
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise MergeError(
                f"The disk is full: the merged file needs {_gb(plan.total_size)} ({plan.total_size:,} bytes) in "
                f"{folder}; {_gb(free)} was free when the merge started. {safe} Free some space and merge again, "
                f"or load the model directly from its first shard: {first_shard}"
            ) from None
        if isinstance(exc, HeaderError):
            raise MergeError(f"the merged file failed its check ({exc}). {safe}") from None
        if isinstance(exc, OSError):
            raise MergeError(f"Merge failed writing {tmp}: {exc.strerror or exc}. {safe}") from None
        raise
    _fsync_dir(folder)

    deleted = False
    note = f"Merged {len(plan.shards)} shards into {out} ({_gb(plan.total_size)}, {len(plan.tensors)} tensors)."
    if keep_shards:
        note += " The shards were kept."
    else:
        failed = []
        for shard in plan.shards:
            try:
                shard.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                failed.append(f"{shard.name} ({exc.strerror or exc})")
        deleted = not failed
        note += " The shards were deleted." if deleted else f" Could not delete: {', '.join(failed)}."
        if not failed:
            _fsync_dir(folder)
    return MergeResult(path=out, merged=True, shards_deleted=deleted, message=note)
