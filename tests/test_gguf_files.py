"""GGUF headers, split sets and the clear messages for bad files."""

from __future__ import annotations

import shutil
from pathlib import Path

import gguf
import pytest

from qwen_chat.gguf.files import ModelFileError, read_model_info, shard_set
from qwen_chat.gguf.header import GGML_BLOCKS, read_header

from tiny_models import write_tiny_qwen3


def test_block_sizes_match_llama_cpp_constants() -> None:
    for qtype, (block, size) in gguf.GGML_QUANT_SIZES.items():
        assert GGML_BLOCKS.get(int(qtype)) == (block, size), qtype.name


def test_reads_tiny_model_like_gguf_reader(tmp_path: Path) -> None:
    path = write_tiny_qwen3(tmp_path / "m.gguf", "qwen3-hybrid.jinja")
    info = read_model_info(path)
    assert (info.architecture, info.block_count, info.head_count_kv, info.key_length) == ("qwen3", 2, 2, 16)
    assert info.context_length == 40960 and info.eos_token == "<|im_end|>"
    assert "enable_thinking" in (info.chat_template or "")
    assert not info.quantized  # F32
    reference = gguf.GGUFReader(path)
    with path.open("rb") as f:
        header = read_header(f)
    assert [t.name for t in header.tensors] == [t.name for t in reference.tensors]
    assert [t.n_bytes for t in header.tensors] == [int(t.n_bytes) for t in reference.tensors]
    assert header.data_offset == reference.data_offset
    assert info.kv_bytes_per_token() == 2 * 2 * (16 + 16) * 2


def test_real_model_header(real_model: Path) -> None:
    info = read_model_info(real_model)
    assert (info.architecture, info.block_count, info.head_count_kv, info.context_length) == ("qwen2", 24, 2, 32768)
    assert info.quantized and info.eos_token == "<|im_end|>"
    with real_model.open("rb") as f:
        assert read_header(f).data_end == real_model.stat().st_size


def test_truncated_file_is_named_with_sizes(tmp_path: Path) -> None:
    path = write_tiny_qwen3(tmp_path / "m.gguf")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ModelFileError, match=r"truncated: .* bytes on disk, the header describes"):
        read_model_info(path)
    path.write_bytes(data[:200])  # cut inside the header itself
    with pytest.raises(ModelFileError, match="damaged or truncated"):
        read_model_info(path)


def test_lfs_pointer_and_foreign_files(tmp_path: Path) -> None:
    pointer = tmp_path / "p.gguf"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    with pytest.raises(ModelFileError, match="Git LFS pointer"):
        read_model_info(pointer)
    html = tmp_path / "h.gguf"
    html.write_text("<html>404</html>")
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        read_model_info(html)
    with pytest.raises(ModelFileError, match="not found"):
        read_model_info(tmp_path / "missing.gguf")


def test_split_set(tmp_path: Path) -> None:
    first = write_tiny_qwen3(tmp_path / "s.gguf", split_max_tensors=10)
    shards = shard_set(first)
    assert len(shards) >= 2 and shards[0] == first
    info = read_model_info(first)
    assert info.size_bytes == sum(s.stat().st_size for s in shards)
    with pytest.raises(ModelFileError, match="open the first shard instead"):
        read_model_info(shards[1])
    moved = tmp_path / "aside.gguf"
    shutil.move(shards[-1], moved)
    with pytest.raises(ModelFileError, match=f"missing {shards[-1].name}"):
        read_model_info(first)
    shutil.move(moved, shards[-1])
    shards[1].write_bytes(shards[1].read_bytes()[:-64])
    with pytest.raises(ModelFileError, match=f"{shards[1].name} is truncated"):
        read_model_info(first)
