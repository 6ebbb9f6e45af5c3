"""The plan of a split-model merge, made before anything is written: the shards checked as one set, the merged
file's header built, and the list of byte ranges to copy into it (gguf_split.py carries the plan out).
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from qwen_chat.gguf.files import SPLIT_COUNT, ModelFileError, check_split_set, shard_set
from qwen_chat.gguf.header import GGUFHeader, HeaderError, TensorInfo, read_header
from qwen_chat.gguf.raw import UINT16, kv_bytes, kv_records, tensor_info_bytes

GGUF_VERSION = 3
SHARD_SUFFIX = re.compile(r"-\d{5}-of-\d{5}(?=\.gguf$)")


class MergeError(Exception):
    """The merge did not happen; the message says why and what to do. The shards are never harmed."""


@dataclass(frozen=True)
class Copy:
    shard: int  # index into the plan's shards
    src_offset: int  # absolute offset in the shard file
    n_bytes: int
    padding: int  # zero bytes written after it


@dataclass(frozen=True)
class MergePlan:
    shards: tuple[Path, ...]
    header_bytes: bytes  # the merged file's header, padded to the data section
    tensors: tuple[TensorInfo, ...]  # with merged offsets
    copies: tuple[Copy, ...]
    total_size: int
    alignment: int

    @property
    def shard_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.shards)


def align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def default_output(first_shard: Path) -> Path:
    """`NAME-00001-of-0000N.gguf` -> `NAME.gguf` in the same folder."""
    return first_shard.with_name(SHARD_SUFFIX.sub("", first_shard.name))


def merge_needed_bytes(first_shard: Path) -> int:
    """Size of the merged file (the free space a merge needs next to the shards)."""
    return plan_merge(Path(first_shard)).total_size


def plan_merge(first_shard: Path) -> MergePlan:
    first_shard = Path(first_shard).expanduser()
    shards = _shards(first_shard)
    headers = [_read_shard(p)[0] for p in shards]
    _check_set(shards, headers)  # raises unless the shards are one complete set
    alignment = headers[0].metadata.get("general.alignment", 32)
    metadata, n_records = _merged_metadata(shards[0], headers[0])
    tensors, copies, data_size = _layout(headers, alignment)
    head = bytearray(b"GGUF" + struct.pack("<IQQ", GGUF_VERSION, len(tensors), n_records))
    head += metadata
    for t in tensors:
        head += tensor_info_bytes(t)
    head += bytes(align(len(head), alignment) - len(head))
    return MergePlan(shards, bytes(head), tuple(tensors), _coalesce(shards, copies), len(head) + data_size, alignment)


def _shards(first_shard: Path) -> tuple[Path, ...]:
    try:
        shards = shard_set(first_shard)
    except ModelFileError as exc:
        raise MergeError(str(exc)) from None
    if not SHARD_SUFFIX.search(first_shard.name):
        raise MergeError(f"{first_shard.name} is not a split model (no -00001-of-0000N in its name): "
                         "there is nothing to merge.")
    return shards


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


def _check_set(shards: tuple[Path, ...], headers: list[GGUFHeader]) -> int:
    """That the shards are one model's complete set, in order (the same check a load makes); their tensor count."""
    try:
        return check_split_set(shards, headers)
    except ModelFileError as exc:
        raise MergeError(str(exc)) from None


def _merged_metadata(first: Path, header: GGUFHeader) -> tuple[bytes, int]:
    """Shard 1's metadata records, raw and in order, as `llama-gguf-split --merge` writes them; and their count.

    What the tool does (tools/gguf-split/gguf-split.cpp, gguf_merge): `gguf_set_val_u16(ctx, split.count, 0)`
    on shard 1, then `gguf_set_kv(out, shard 1)`. ggml's gguf_set_val_* remove the key and append it again, so
    split.count (uint16 0) moves to the end; every other record, split.no and split.tensors.count included,
    keeps its place, type and value (_check_set made sure those are 0 and the total). Shards the tool wrote
    already end with split.count; shards the `gguf` Python package wrote have it before split.tensors.count.
    """
    with first.open("rb") as f:
        raw = f.read(header.data_offset)
    try:
        records = kv_records(raw)
    except (HeaderError, struct.error) as exc:
        raise MergeError(f"{first.name} has a damaged header ({exc}). Download it again.") from None
    kv = bytearray()
    for key, start, end in records:
        if key != SPLIT_COUNT:
            kv += raw[start:end]
    kv += kv_bytes(SPLIT_COUNT, UINT16, 0)
    return bytes(kv), len(records)


def _layout(headers: list[GGUFHeader], alignment: int) -> tuple[list[TensorInfo], list[Copy], int]:
    """Every shard's tensors in shard order at their merged offsets, the copies that put them there, and the size
    of the merged data section."""
    tensors: list[TensorInfo] = []
    copies: list[Copy] = []
    offset = 0
    for index, header in enumerate(headers):
        for t in header.tensors:
            size = t.n_bytes
            padded = align(size, alignment)
            tensors.append(TensorInfo(t.name, t.shape, t.ggml_type, offset))
            copies.append(Copy(index, header.data_offset + t.offset, size, padded - size))
            offset += padded
    return tensors, copies, offset


def _coalesce(shards: tuple[Path, ...], copies: list[Copy]) -> tuple[Copy, ...]:
    """Join neighbouring tensors of a shard whose source padding is already zeros into one long copy:
    a few large in-kernel copies instead of one per tensor (the bytes written are the same)."""
    joined: list[Copy] = []
    handles = [p.open("rb") for p in shards]
    try:
        for copy in copies:
            last = joined[-1] if joined else None
            if (last is not None and last.shard == copy.shard
                    and last.src_offset + last.n_bytes + last.padding == copy.src_offset
                    and os.pread(handles[last.shard].fileno(), last.padding, last.src_offset + last.n_bytes)
                    == bytes(last.padding)):
                joined[-1] = Copy(copy.shard, last.src_offset, last.n_bytes + last.padding + copy.n_bytes,
                                  copy.padding)
            else:
                joined.append(copy)
    finally:
        for handle in handles:
            handle.close()
    return tuple(joined)
