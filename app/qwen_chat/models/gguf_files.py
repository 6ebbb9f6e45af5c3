"""GGUF files on disk: split sets, header metadata, and checks that catch a bad file before llama.cpp does."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen_chat.models.gguf_header import GGUFHeader, HeaderError, read_header

GGUF_MAGIC = b"GGUF"
_SHARD = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")
# general.file_type values that mean "not quantized" (llama_ftype: ALL_F32, MOSTLY_F16, MOSTLY_BF16).
_UNQUANTIZED_FILE_TYPES = {0, 1, 32}


class ModelFileError(Exception):
    """A model file that cannot be used; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class ModelInfo:
    path: Path  # the file to hand to llama.cpp (the first shard for a split model)
    shards: tuple[Path, ...]
    size_bytes: int  # all shards together
    architecture: str
    name: str
    context_length: int
    block_count: int
    embedding_length: int
    head_count: int
    head_count_kv: int
    key_length: int
    value_length: int
    expert_count: int
    file_type: int | None
    chat_template: str | None
    bos_token: str
    eos_token: str
    n_vocab: int = 0
    headers: tuple[GGUFHeader, ...] = field(default=(), repr=False, compare=False)  # tensor tables, all shards

    @property
    def quantized(self) -> bool:
        return self.file_type not in _UNQUANTIZED_FILE_TYPES

    def kv_bytes_per_token(self, bytes_per_element: float = 2.0) -> int:
        """f16 K and V for every layer: the size of one context position."""
        per_layer = self.head_count_kv * (self.key_length + self.value_length)
        return int(self.block_count * per_layer * bytes_per_element)


def shard_set(path: Path) -> tuple[Path, ...]:
    """Every file of a split model given its first shard, or just `path` for a single file."""
    match = _SHARD.match(path.name)
    if not match:
        return (path,)
    index, count = int(match["index"]), int(match["count"])
    if index != 1:
        first = path.with_name(f"{match['stem']}-00001-of-{match['count']}.gguf")
        raise ModelFileError(f"{path.name} is shard {index} of {count}; open the first shard instead: {first}")
    shards = tuple(path.with_name(f"{match['stem']}-{i:05d}-of-{match['count']}.gguf") for i in range(1, count + 1))
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise ModelFileError(
            f"split model {match['stem']} is incomplete: missing {', '.join(missing)} in {path.parent}. "
            "Download the missing shards (all must sit in the same folder)."
        )
    return shards


def check_magic(path: Path) -> None:
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except FileNotFoundError:
        raise ModelFileError(f"model file not found: {path}") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path} is a folder; give the path of a .gguf file") from None
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror}") from None
    if head.startswith(b"version https://git-lfs"):
        raise ModelFileError(
            f"{path.name} is a Git LFS pointer, not the model: it was cloned without LFS. "
            "Download the real file (git lfs pull, or qwen-chat pull)."
        )
    if not head.startswith(GGUF_MAGIC):
        raise ModelFileError(f"{path.name} is not a GGUF file (it does not start with 'GGUF').")


def _read_shard(path: Path, keep_tokens: set[int] | None = None) -> GGUFHeader:
    check_magic(path)
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            header = read_header(f, keep_tokens)
    except HeaderError as exc:
        raise ModelFileError(
            f"{path.name} is damaged or truncated ({size:,} bytes; {exc}). Delete it and download it again."
        ) from None
    if header.data_end > size:
        raise ModelFileError(
            f"{path.name} is truncated: {size:,} bytes on disk, the header describes {header.data_end:,}. "
            "The download did not finish; download it again (qwen-chat resumes partial downloads)."
        )
    return header


def read_model_info(path: Path) -> ModelInfo:
    """Read and check a GGUF model (every shard of a split one) without loading its weights."""
    path = Path(path).expanduser()
    shards = shard_set(path)
    headers = [_read_shard(s) for s in shards]
    meta = headers[0].metadata
    ids = (meta.get(k) for k in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"))
    special = {i for i in ids if isinstance(i, int)}
    tokens = _read_shard(shards[0], special).metadata.get("tokenizer.ggml.tokens") if special else None
    arch = meta.get("general.architecture")
    if not arch:
        raise ModelFileError(f"{path.name} has no general.architecture: it is not a model file.")

    def arch_field(name: str, default: Any = 0) -> Any:
        value = meta.get(f"{arch}.{name}", default)
        return max(value) if isinstance(value, list) else value  # per-layer arrays: the largest bounds memory

    embedding = int(arch_field("embedding_length"))
    heads = int(arch_field("attention.head_count", 1)) or 1
    head_dim = embedding // heads if embedding else 0
    return ModelInfo(
        path=path,
        shards=shards,
        size_bytes=sum(s.stat().st_size for s in shards),
        architecture=str(arch),
        name=str(meta.get("general.name", path.stem)),
        context_length=int(arch_field("context_length", 4096)),
        block_count=int(arch_field("block_count")),
        embedding_length=embedding,
        head_count=heads,
        head_count_kv=int(arch_field("attention.head_count_kv", heads)),
        key_length=int(arch_field("attention.key_length", head_dim)),
        value_length=int(arch_field("attention.value_length", head_dim)),
        expert_count=int(arch_field("expert_count", 0)),
        file_type=meta.get("general.file_type"),
        chat_template=meta.get("tokenizer.chat_template"),
        bos_token=_token_text(meta, tokens, "tokenizer.ggml.bos_token_id"),
        eos_token=_token_text(meta, tokens, "tokenizer.ggml.eos_token_id"),
        n_vocab=headers[0].array_lengths.get("tokenizer.ggml.tokens", 0),
        headers=tuple(headers),
    )


def _token_text(meta: dict[str, Any], tokens: Any, key: str) -> str:
    token_id = meta.get(key)
    if not isinstance(tokens, dict) or token_id not in tokens:
        return ""
    return str(tokens[token_id])
