"""Split models for the merge tests: a real GGUF split into `-0000i-of-0000N` shards the way llama-gguf-split
lays them out, and tiny split models written by the `gguf` package (with the helpers to look at them)."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import replace
from pathlib import Path

from qwen_chat.gguf.header import read_header
from qwen_chat.gguf.raw import gguf_string as _gguf_string
from qwen_chat.gguf.raw import kv_records as _kv_records
from qwen_chat.gguf.raw import tensor_info_bytes as _tensor_info_bytes

from tiny_models import write_tiny_qwen3

UINT16, INT32 = 2, 5


def _kv(key: str, vtype: int, value: int) -> bytes:
    return _gguf_string(key) + struct.pack("<I", vtype) + struct.pack("<H" if vtype == UINT16 else "<i", value)


def split_gguf(src: Path, out_dir: Path, stem: str, shards: int) -> list[Path]:
    with src.open("rb") as f:
        header = read_header(f)
        f.seek(0)
        raw_header = f.read(header.data_offset)
    align = header.metadata.get("general.alignment", 32)
    records = _kv_records(raw_header)
    original_kv = b"".join(raw_header[start:end] for _, start, end in records)
    per = -(-len(header.tensors) // shards)
    groups = [header.tensors[i * per:(i + 1) * per] for i in range(shards)]
    paths = []
    with src.open("rb") as source:
        for index, group in enumerate(groups):
            split_kv = (_kv("split.no", UINT16, index) + _kv("split.count", UINT16, shards)
                        + _kv("split.tensors.count", INT32, len(header.tensors)))
            kv, n_kv = (original_kv + split_kv, len(records) + 3) if index == 0 else (split_kv, 3)
            offset, infos = 0, []
            for tensor in group:
                infos.append(replace(tensor, offset=offset))
                offset += -(-tensor.n_bytes // align) * align
            head = (b"GGUF" + struct.pack("<IQQ", 3, len(group), n_kv) + kv
                    + b"".join(_tensor_info_bytes(t) for t in infos))
            head += b"\0" * (-len(head) % align)
            path = out_dir / f"{stem}-{index + 1:05d}-of-{shards:05d}.gguf"
            with path.open("wb") as out:
                out.write(head)
                for tensor in group:
                    source.seek(header.data_offset + tensor.offset)
                    out.write(source.read(tensor.n_bytes))
                    out.write(b"\0" * (-tensor.n_bytes % align))
            paths.append(path)
    return paths


def split_model(folder: Path, per_shard: int = 7, **kwargs) -> Path:
    """A tiny qwen3 split by the `gguf` package, `per_shard` tensors a shard; returns the first shard."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_tiny_qwen3(folder / "tiny.gguf", split_max_tensors=per_shard, **kwargs)


def shards_of(first: Path) -> list[Path]:
    return sorted(first.parent.glob("tiny-0000*-of-*.gguf"))


def digests(paths: list[Path]) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
