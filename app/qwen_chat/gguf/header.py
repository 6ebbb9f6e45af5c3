"""A fast reader for the GGUF header: metadata keys and the tensor table, never the weights.

The `gguf` package's reader builds a numpy view per array element, which takes seconds on a Qwen vocabulary
(151,936 strings); this one skips string arrays it is not asked for and reads a Qwen3 header in milliseconds.
Format: magic "GGUF", uint32 version (2 or 3), uint64 tensor count, uint64 key count, the keys, then per
tensor: name, uint32 n_dims, uint64 dims, uint32 ggml type, uint64 offset; data starts at the next multiple
of `general.alignment` (32 by default).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO

_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d",
}
_STRING, _ARRAY = 8, 9

# ggml type id -> (elements per block, bytes per block), from ggml.h / gguf constants.
GGML_BLOCKS: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}


class HeaderError(ValueError):
    pass


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # relative to the start of the data section

    @property
    def n_bytes(self) -> int:
        elements = 1
        for dim in self.shape:
            elements *= dim
        if self.ggml_type not in GGML_BLOCKS:
            raise HeaderError(f"tensor {self.name} has unknown ggml type {self.ggml_type}")
        block, size = GGML_BLOCKS[self.ggml_type]
        return elements // block * size


@dataclass
class GGUFHeader:
    version: int
    metadata: dict[str, Any] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0
    # For big string arrays (the vocabulary) only the count is kept, plus the few items asked for.
    array_lengths: dict[str, int] = field(default_factory=dict)

    @property
    def data_end(self) -> int:
        """Where the last tensor's bytes end: a file shorter than this is truncated."""
        return self.data_offset + max((t.offset + t.n_bytes for t in self.tensors), default=0)


class _Reader:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.pos = 0

    def take(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise HeaderError(f"the file ends inside its header (at byte {self.pos + len(data):,})")
        self.pos += n
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        length = self.unpack("<Q")
        if length > 1 << 30:
            raise HeaderError(f"implausible string length {length:,} at byte {self.pos:,}")
        return self.take(length).decode("utf-8", "replace")

    def skip_string(self) -> None:
        length = self.unpack("<Q")
        self.f.seek(length, 1)
        self.pos += length

    def value(self, vtype: int, key: str, header: GGUFHeader, keep: set[int] | None) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype != _ARRAY:
            raise HeaderError(f"key {key} has unknown value type {vtype}")
        item_type, count = self.unpack("<I"), self.unpack("<Q")
        header.array_lengths[key] = count
        if item_type == _STRING:
            if keep is None and count <= 64:
                return [self.string() for _ in range(count)]
            kept = {}
            for index in range(count):
                if keep and index in keep:
                    kept[index] = self.string()
                else:
                    self.skip_string()
            return kept
        if item_type not in _SCALARS:
            raise HeaderError(f"key {key} holds an array of unknown type {item_type}")
        fmt = _SCALARS[item_type]
        size = struct.calcsize(fmt)
        if count > 4096:  # big numeric arrays (token types, scores): not needed, skip
            self.f.seek(count * size, 1)
            self.pos += count * size
            return None
        raw = self.take(count * size)
        return list(struct.unpack("<" + fmt[1:] * count, raw))


def read_header(f: BinaryIO, keep_tokens: set[int] | None = None) -> GGUFHeader:
    """Parse the header from an open binary file positioned at 0.

    `keep_tokens`: ids whose text to keep from `tokenizer.ggml.tokens` (e.g. bos and eos); others skipped.
    """
    r = _Reader(f)
    if r.take(4) != b"GGUF":
        raise HeaderError("not a GGUF file (bad magic)")
    version = r.unpack("<I")
    if version not in (2, 3):
        raise HeaderError(f"GGUF version {version} is not supported")
    header = GGUFHeader(version)
    n_tensors, n_keys = r.unpack("<Q"), r.unpack("<Q")
    if n_tensors > 1 << 24 or n_keys > 1 << 20:
        raise HeaderError("implausible tensor or key count: the header is damaged")
    for _ in range(n_keys):
        key = r.string()
        vtype = r.unpack("<I")
        keep = (keep_tokens or set()) if key == "tokenizer.ggml.tokens" else None
        header.metadata[key] = r.value(vtype, key, header, keep)
    for _ in range(n_tensors):
        name = r.string()
        n_dims = r.unpack("<I")
        if n_dims > 8:
            raise HeaderError(f"tensor {name} claims {n_dims} dimensions: the header is damaged")
        shape = tuple(r.unpack("<Q") for _ in range(n_dims))
        header.tensors.append(TensorInfo(name, shape, r.unpack("<I"), r.unpack("<Q")))
    alignment = header.metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise HeaderError(f"invalid general.alignment {alignment!r}")
    header.data_offset = -(-r.pos // alignment) * alignment
    return header
