"""GGUF files on disk: split sets, header metadata, and checks that catch a bad file before llama.cpp does."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen_chat.gguf.header import GGUFHeader, HeaderError, read_header

GGUF_MAGIC = b"GGUF"
SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS = "split.no", "split.count", "split.tensors.count"
_SHARD = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")
# general.file_type values that mean "not quantized" (llama_ftype: ALL_F32, MOSTLY_F16, MOSTLY_BF16).
_UNQUANTIZED_FILE_TYPES = {0, 1, 32}
# Hybrid architectures whose GGUFs may leave full_attention_interval out: llama.cpp then takes 4 for them.
_DEFAULT_ATTENTION_INTERVAL = {"qwen3next": 4, "qwen35": 4, "qwen35moe": 4}


class ModelFileError(Exception):
    """A model file that cannot be used; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class Recurrence:
    """The recurrent (Gated DeltaNet / Mamba-style) layers of a hybrid model, from its ssm.* metadata.

    llama.cpp keeps no KV cache for these layers but one conv + ssm state per sequence each, in f32, whatever
    the context size (llama_memory_recurrent, sized by n_embd_r() / n_embd_s() in llama-hparams.cpp)."""

    layers: tuple[bool, ...]  # per block: True for a recurrent layer
    conv_kernel: int  # ssm.conv_kernel (d_conv)
    inner_size: int  # ssm.inner_size (d_inner)
    state_size: int  # ssm.state_size (d_state)
    group_count: int  # ssm.group_count (n_group)

    @property
    def count(self) -> int:
        return sum(self.layers)

    @property
    def conv_floats(self) -> int:
        """n_embd_r(): the last d_conv - 1 inputs of the short convolution over x, B and C."""
        return max(0, self.conv_kernel - 1) * (self.inner_size + 2 * self.group_count * self.state_size)

    @property
    def state_floats(self) -> int:
        """n_embd_s(): the ssm state (for Gated DeltaNet a head_v × head_v matrix per V head)."""
        return self.state_size * self.inner_size

    def bytes_per_sequence(self) -> int:
        """f32 conv + ssm state of every recurrent layer, for one sequence."""
        return 4 * (self.conv_floats + self.state_floats) * self.count


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
    recurrence: Recurrence | None = None  # hybrid recurrent models (Qwen3-Next, Qwen3.5) only
    nextn_layers: int = 0  # trailing MTP blocks: llama.cpp gives them no memory in the main context

    @property
    def kv_layers(self) -> int:
        """Layers that keep a KV cache: all but the recurrent ones (and the MTP blocks)."""
        layers = self.block_count - self.nextn_layers
        return layers - (self.recurrence.count if self.recurrence else 0)

    @property
    def quantized(self) -> bool:
        return self.file_type not in _UNQUANTIZED_FILE_TYPES

    def kv_bytes_per_token(self, bytes_per_element: float = 2.0) -> int:
        """f16 K and V for every layer with a KV cache: the size of one context position."""
        per_layer = self.head_count_kv * (self.key_length + self.value_length)
        return int(self.kv_layers * per_layer * bytes_per_element)


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
    # llama.cpp would refuse a foreign or swapped shard too, but say why only in its log
    if len(shards) > 1:
        check_split_set(shards, headers)
    else:
        _check_not_a_renamed_shard(path, headers[0])
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
        recurrence=_recurrence(meta, str(arch), int(arch_field("block_count"))),
        nextn_layers=int(arch_field("nextn_predict_layers", 0)),
    )


def _recurrence(meta: dict[str, Any], arch: str, blocks: int) -> Recurrence | None:
    """Which layers are recurrent, the way llama.cpp's qwen3next / qwen35 loaders decide: the per-layer
    attention.recurrent_layers array if the file has one, else every layer but each full_attention_interval-th."""
    if f"{arch}.ssm.state_size" not in meta:
        return None
    nextn = int(meta.get(f"{arch}.nextn_predict_layers", 0))
    flags = meta.get(f"{arch}.attention.recurrent_layers")
    if isinstance(flags, list):
        layers = tuple(bool(f) and i < blocks - nextn for i, f in enumerate(flags[:blocks]))
    else:
        interval = int(meta.get(f"{arch}.full_attention_interval", _DEFAULT_ATTENTION_INTERVAL.get(arch, 0)))
        # no interval at all (a pure recurrent model such as Mamba): every layer is recurrent
        layers = tuple(i < blocks - nextn and (interval <= 0 or (i + 1) % interval != 0) for i in range(blocks))

    def ssm(name: str) -> int:
        return int(meta.get(f"{arch}.ssm.{name}", 0))

    return Recurrence(layers, ssm("conv_kernel"), ssm("inner_size"), ssm("state_size"), ssm("group_count"))


def check_split_set(shards: tuple[Path, ...], headers: list[GGUFHeader]) -> int:
    """That the shards are one model's complete set, each in its place; returns its tensor count.

    The checks llama.cpp makes while loading (split.no per file, no tensor twice, the tensor count) and a few
    more (each shard's split.count and tensor count, the model name), each failure naming the shard: llama.cpp
    says why only in its log.
    """
    n, first = len(shards), shards[0].name
    meta0 = headers[0].metadata
    if SPLIT_COUNT not in meta0:
        raise ModelFileError(f"{first} is named like the first of {n} shards but has no split metadata: it is not "
                             "part of a split model. Give it its own name back (without -00001-of-...).")
    if meta0[SPLIT_COUNT] != n:
        raise ModelFileError(f"{first} says split.count = {meta0[SPLIT_COUNT]!r} but its name says {n} shards: "
                             "the file was renamed or belongs to another model.")
    total = meta0.get(SPLIT_TENSORS)
    seen: dict[str, str] = {}  # tensor name -> the shard that holds it
    for index, (path, header) in enumerate(zip(shards, headers, strict=True)):
        _check_shard_place(index, path, header, n, total, headers[0])
        for t in header.tensors:
            if t.name in seen:
                raise ModelFileError(f"{path.name} does not belong to this split model ({first}): tensor {t.name} "
                                     f"is in {seen[t.name]} too; put the right shard in its place (download it "
                                     "again).")
            seen[t.name] = path.name
    if len(seen) != total:
        raise ModelFileError(f"the shards of {first} hold {len(seen)} tensors but split.tensors.count says "
                             f"{total!r}: a shard is from another model or damaged. Download the set again.")
    return int(total)


def _check_shard_place(index: int, path: Path, header: GGUFHeader, n: int, total: Any, first: GGUFHeader) -> None:
    """Shard `index` (0-based) says it is that part of an `n`-shard set of `total` tensors, of the same model."""
    meta = header.metadata
    foreign = f"{path.name} does not belong to this split model"
    fix = "; put the right shard in its place (download it again)."
    no, count = meta.get(SPLIT_NO), meta.get(SPLIT_COUNT)
    if count != n:
        raise ModelFileError(f"{foreign}: it is part of a {count!r}-shard set, not {n}{fix}")
    if no != index:
        part = f"part {no + 1} of {count}" if isinstance(no, int) else "no part at all"
        raise ModelFileError(
            f"{path.name} does not belong in this place: shard {index + 1} says it is {part} (its split.no is "
            f"{no!r}, expected {index}). The shards were renamed or swapped: give each its own name back, or "
            "download the set again.")
    if meta.get(SPLIT_TENSORS) != total:
        raise ModelFileError(f"{foreign}: it belongs to another split set ({meta.get(SPLIT_TENSORS)!r} tensors, "
                             f"not {total!r}){fix}")
    for key in ("general.architecture", "general.name"):
        if index and key in meta and meta[key] != first.metadata.get(key):
            raise ModelFileError(f"{foreign}: its {key} is {meta[key]!r}, shard 1 has "
                                 f"{first.metadata.get(key)!r}{fix}")


def _check_not_a_renamed_shard(path: Path, header: GGUFHeader) -> None:
    """A shard under a plain name: llama.cpp finds the other shards by their -0000i-of-0000N names only."""
    count, no = header.metadata.get(SPLIT_COUNT), header.metadata.get(SPLIT_NO)
    if not isinstance(count, int) or count <= 1:
        return  # a single file (a merged one says split.count = 0)
    part = f"part {no + 1}" if isinstance(no, int) else "a part"
    raise ModelFileError(f"{path.name} is {part} of a {count}-shard split model under another name: llama.cpp "
                         f"finds the other shards only by their -0000i-of-{count:05d} names. Give the shards their "
                         f"names back (the first ends in -00001-of-{count:05d}.gguf) and open the first.")


def _token_text(meta: dict[str, Any], tokens: Any, key: str) -> str:
    token_id = meta.get(key)
    if not isinstance(tokens, dict) or token_id not in tokens:
        return ""
    return str(tokens[token_id])
