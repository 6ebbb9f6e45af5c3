"""GGUF header bytes as bytes: where each key/value record starts and ends, and the encoding of the few records
a merge writes anew. A merge copies every other record byte for byte, so nothing is decoded and re-encoded
(gguf_header.py is the reader that decodes).
"""

from __future__ import annotations

import struct

from qwen_chat.gguf.header import HeaderError, TensorInfo

_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY, UINT16, INT32 = 8, 9, 2, 5


def skip_value(buf: bytes, pos: int, vtype: int) -> int:
    """Position just after a value of type `vtype` starting at `pos`."""
    if vtype in _SCALAR_SIZES:
        return pos + _SCALAR_SIZES[vtype]
    if vtype == STRING:
        (length,) = struct.unpack_from("<Q", buf, pos)
        return pos + 8 + length
    if vtype == ARRAY:
        item_type, count = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if item_type in _SCALAR_SIZES:
            return pos + count * _SCALAR_SIZES[item_type]
        if item_type == STRING:
            unpack = struct.Struct("<Q").unpack_from
            for _ in range(count):
                pos += 8 + unpack(buf, pos)[0]
            return pos
        for _ in range(count):
            pos = skip_value(buf, pos, item_type)
        return pos
    raise HeaderError(f"unknown value type {vtype} at byte {pos:,}")


def kv_records(buf: bytes) -> list[tuple[str, int, int]]:
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
        pos = skip_value(buf, pos + 4, vtype)
        if pos > len(buf):
            raise HeaderError(f"key {key} runs past the header")
        records.append((key, start, pos))
    return records


def gguf_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def kv_bytes(key: str, vtype: int, value: int) -> bytes:
    fmt = "<H" if vtype == UINT16 else "<i"
    return gguf_string(key) + struct.pack("<I", vtype) + struct.pack(fmt, value)


def tensor_info_bytes(t: TensorInfo) -> bytes:
    return (gguf_string(t.name) + struct.pack("<I", len(t.shape)) + struct.pack(f"<{len(t.shape)}Q", *t.shape)
            + struct.pack("<IQ", t.ggml_type, t.offset))
