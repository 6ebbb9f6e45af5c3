"""Merging a split GGUF model: the output matches the unsplit model, and every fault leaves the shards intact."""

from __future__ import annotations

import errno
import shutil
import struct
import threading
from collections import namedtuple
from pathlib import Path

import gguf
import pytest

from qwen_chat.engines.llama import Engine
from qwen_chat.engines.protocol import Failed, Loaded, LoadRequest
from qwen_chat.gguf import split as gguf_split
from qwen_chat.gguf.header import read_header
from qwen_chat.gguf.merge_plan import MergeError, merge_needed_bytes
from qwen_chat.gguf.split import merge_shards
from split_fixture import digests, shards_of, split_model

from tiny_models import write_tiny_qwen3

SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")


def whole_model(folder: Path, **kwargs) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_tiny_qwen3(folder / "tiny.gguf", **kwargs)


def header_of(path: Path):
    with path.open("rb") as f:
        return read_header(f)


def assert_untouched(folder: Path, before: dict[str, str]) -> None:
    """The shards are exactly as before and no merged or temporary file is left."""
    assert digests(sorted(folder.glob("tiny-0000*-of-*.gguf"))) == before
    assert not (folder / "tiny.gguf").exists()
    assert not list(folder.glob(".*partial"))


@pytest.mark.parametrize(("per_shard", "chunk", "kernel_copy"), [(1, gguf_split.CHUNK, True), (5, 4096, True),
                                                                (7, gguf_split.CHUNK, False), (23, 1000, False)])
def test_merge_matches_the_unsplit_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per_shard: int,
                                         chunk: int, kernel_copy: bool) -> None:
    monkeypatch.setattr(gguf_split, "CHUNK", chunk)  # small chunks: tensors copied in many pieces
    # both data paths: copy_file_range and the read/write fallback
    monkeypatch.setattr(gguf_split, "_use_copy_file_range", kernel_copy and gguf_split._use_copy_file_range)
    first = split_model(tmp_path / "split", per_shard)
    n_shards = len(shards_of(first))
    assert n_shards > 1
    whole = whole_model(tmp_path / "whole")
    needed = merge_needed_bytes(first)
    calls: list[tuple[int, int]] = []

    result = merge_shards(first, delete_shards=True, progress=lambda done, total: calls.append((done, total)))

    out = tmp_path / "split" / "tiny.gguf"
    assert result.merged and result.shards_deleted and result.path == out
    assert out.stat().st_size == needed
    assert calls[-1] == (needed, needed) and all(a <= b for (a, _), (b, _) in zip(calls, calls[1:], strict=False))
    merged, expected = header_of(out), header_of(whole)
    # our reader: same metadata apart from split.*, same tensor table, data_end == size
    assert {k: v for k, v in merged.metadata.items() if k not in SPLIT_KEYS} == expected.metadata
    assert [(k, merged.metadata[k]) for k in SPLIT_KEYS] == [("split.no", 0), ("split.count", 0),
                                                             ("split.tensors.count", len(expected.tensors))]
    assert merged.tensors == expected.tensors
    assert merged.version == 3 and merged.data_end == out.stat().st_size
    # the data section is byte-identical to the unsplit file's
    assert out.read_bytes()[merged.data_offset:] == whole.read_bytes()[expected.data_offset:]
    # gguf's own reader: key order and types (split.* typed as llama-gguf-split writes them), tensor bytes
    reader, reference = gguf.GGUFReader(str(out)), gguf.GGUFReader(str(whole))
    assert [k for k in reader.fields if k not in SPLIT_KEYS] == list(reference.fields)
    for name in list(reference.fields)[3:]:
        assert reader.fields[name].types == reference.fields[name].types
        assert bytes(reader.fields[name].parts[-1]) == bytes(reference.fields[name].parts[-1])
    types = {k: reader.fields[k].types for k in SPLIT_KEYS}
    assert types == {"split.no": [gguf.GGUFValueType.UINT16], "split.count": [gguf.GGUFValueType.UINT16],
                     "split.tensors.count": [gguf.GGUFValueType.INT32]}
    assert int(reader.fields["split.tensors.count"].parts[-1][0]) == len(reference.tensors)
    assert [t.name for t in reader.tensors] == [t.name for t in reference.tensors]
    for got, want in zip(reader.tensors, reference.tensors, strict=True):
        assert got.data.tobytes() == want.data.tobytes(), got.name
        assert got.data_offset == want.data_offset - expected.data_offset + merged.data_offset


def llama_gguf_split_key_order(first_shard_keys: list[str]) -> list[str]:
    """The merged header's key order as `llama-gguf-split --merge` makes it, from shard 1's keys in file order.

    tools/gguf-split/gguf-split.cpp, gguf_merge(), for the first split:
        gguf_set_val_u16(ctx_gguf, LLM_KV_SPLIT_COUNT, 0);  // "Do not trigger merge if we try to merge again"
        gguf_set_kv(ctx_out, ctx_gguf);                      // "Set metadata from the first split"
    and ggml/src/gguf.cpp:
        void gguf_set_val_u16(ctx, key, val) { ...; gguf_remove_key(ctx, key); ctx->kv.emplace_back(key, val); }
        gguf_set_kv(ctx, src): for each kv of src in order, gguf_set_val_* / gguf_set_arr_* (ctx_out starts empty,
        so each is simply appended).
    So split.count is erased from its place and appended after every other key; the rest keep shard 1's order.
    (No other key is set on the merge path: split.no and split.tensors.count stay where shard 1 has them.)
    """
    return [key for key in first_shard_keys if key != "split.count"] + ["split.count"]


def gguf_keys(path: Path) -> list[str]:
    return [key for key in gguf.GGUFReader(str(path)).fields if not key.startswith("GGUF.")]


def test_merged_key_order_is_llama_gguf_splits_for_shards_the_gguf_package_wrote(tmp_path: Path) -> None:
    first = split_model(tmp_path / "split", 7)
    shard_keys = gguf_keys(first)
    # the gguf package writes split.no, split.count, split.tensors.count: not the order the tool writes
    assert shard_keys[-3:] == ["split.no", "split.count", "split.tensors.count"]
    merge_shards(first)
    merged = tmp_path / "split" / "tiny.gguf"
    assert gguf_keys(merged) == llama_gguf_split_key_order(shard_keys)
    assert gguf_keys(merged)[-3:] == ["split.no", "split.tensors.count", "split.count"]
    reader = gguf.GGUFReader(str(merged))
    assert reader.fields["split.count"].types == [gguf.GGUFValueType.UINT16]
    assert int(reader.fields["split.count"].parts[-1][0]) == 0


def test_key_order_rule_holds_for_the_tools_own_output() -> None:
    """The rule above, applied to shards llama-gguf-split wrote, gives the order of the file it merged."""
    golden = Path(__file__).parent / "fixtures" / "gguf_split_golden"
    shard_keys = gguf_keys(golden / "tiny-00001-of-00003.gguf")
    assert gguf_keys(golden / "tiny-merged-by-llama-gguf-split.gguf") == llama_gguf_split_key_order(shard_keys)


def test_merged_model_loads_in_llama_cpp(tmp_path: Path) -> None:
    result = merge_shards(split_model(tmp_path / "split", 5))
    done = threading.Event()
    seen: list = []

    def on(event: object) -> None:
        seen.append(event)
        if isinstance(event, Loaded | Failed):
            done.set()

    engine = Engine(on).start()
    try:
        engine.load(LoadRequest(result.path, n_ctx=256))
        assert done.wait(60)
    finally:
        engine.shutdown()
    assert isinstance(seen[-1], Loaded), seen[-1]


def test_shards_are_kept_unless_asked_to_delete_them(tmp_path: Path) -> None:
    first = split_model(tmp_path / "split")
    before = digests(shards_of(first))
    result = merge_shards(first, tmp_path / "elsewhere.gguf")
    assert result.merged and not result.shards_deleted and result.path == tmp_path / "elsewhere.gguf"
    assert "kept" in result.message
    assert digests(shards_of(first)) == before
    deleted = merge_shards(first, tmp_path / "again.gguf", delete_shards=True)
    assert deleted.merged and deleted.shards_deleted and "deleted" in deleted.message
    assert shards_of(first) == []
    assert (tmp_path / "again.gguf").read_bytes() == (tmp_path / "elsewhere.gguf").read_bytes()


def test_missing_shard(tmp_path: Path) -> None:
    first = split_model(tmp_path / "split")
    shards = shards_of(first)
    hidden = tmp_path / shards[1].name
    shards[1].rename(hidden)
    before = digests(shards_of(first))
    with pytest.raises(MergeError, match=f"missing {shards[1].name}"):
        merge_shards(first)
    assert_untouched(first.parent, before)
    hidden.rename(shards[1])
    assert merge_shards(first).merged


def test_truncated_shard(tmp_path: Path) -> None:
    first = split_model(tmp_path / "split")
    shard = shards_of(first)[2]
    good = shard.read_bytes()
    shard.write_bytes(good[: len(good) - 1000])
    before = digests(shards_of(first))
    with pytest.raises(MergeError, match=f"{shard.name} is truncated.*Download this shard again"):
        merge_shards(first)
    assert_untouched(first.parent, before)
    shard.write_bytes(good)
    assert merge_shards(first).merged


def test_foreign_shard(tmp_path: Path) -> None:
    first = split_model(tmp_path / "split", 7)  # 24 tensors in 4 shards
    other = split_model(tmp_path / "other", 9, layers=3, seed=1)  # 35 tensors, also in 4 shards
    assert len(shards_of(other)) == len(shards_of(first)) == 4
    shard = shards_of(first)[1]
    good = shard.read_bytes()
    shutil.copyfile(shards_of(other)[1], shard)
    before = digests(shards_of(first))
    with pytest.raises(MergeError, match=f"{shard.name} does not belong to this split model"):
        merge_shards(first)
    assert_untouched(first.parent, before)
    shard.write_bytes(good)
    assert merge_shards(first).merged


def test_cancel_mid_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gguf_split, "CHUNK", 4096)
    first = split_model(tmp_path / "split")
    before = digests(shards_of(first))
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        if done > total // 2:
            cancel.set()

    with pytest.raises(MergeError, match="cancelled.*Nothing was lost"):
        merge_shards(first, progress=progress, cancel=cancel)
    assert_untouched(first.parent, before)
    assert merge_shards(first, cancel=threading.Event()).merged


def test_keyboard_interrupt_mid_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gguf_split, "CHUNK", 4096)
    first = split_model(tmp_path / "split")
    before = digests(shards_of(first))
    calls = []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 10:
            raise KeyboardInterrupt

    with pytest.raises(MergeError, match="interrupted.*Nothing was lost"):
        merge_shards(first, progress=progress)
    assert_untouched(first.parent, before)
    assert merge_shards(first).merged


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_disk_full_during_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel_copy: bool) -> None:
    """Both write paths (header/padding writes and tensor-data copies) fill up a 100 kB 'disk'."""
    monkeypatch.setattr(gguf_split, "CHUNK", 4096)
    monkeypatch.setattr(gguf_split, "_use_copy_file_range", kernel_copy and gguf_split._use_copy_file_range)
    first = split_model(tmp_path / "split")
    before = digests(shards_of(first))
    needed = merge_needed_bytes(first)
    real_write, real_copy = gguf_split._write_all, gguf_split._copy_chunk
    written = [0]

    def room(n: int) -> int:
        left = 100_000 - written[0]
        if n > left:
            written[0] = 100_000
            raise OSError(errno.ENOSPC, "No space left on device")
        written[0] += n
        return n

    def write_all(fd: int, data) -> None:
        real_write(fd, memoryview(data)[: room(len(data))])

    def copy_chunk(src: int, dst: int, offset: int, n: int, buffer) -> int:
        return real_copy(src, dst, offset, room(n), buffer)

    monkeypatch.setattr(gguf_split, "_write_all", write_all)
    monkeypatch.setattr(gguf_split, "_copy_chunk", copy_chunk)
    with pytest.raises(MergeError) as caught:
        merge_shards(first)
    message = str(caught.value)
    assert "disk is full" in message and f"{needed:,} bytes" in message and "Nothing was lost" in message
    assert written[0] == 100_000  # it really was stopped mid-way
    assert_untouched(first.parent, before)
    monkeypatch.setattr(gguf_split, "_write_all", real_write)
    monkeypatch.setattr(gguf_split, "_copy_chunk", real_copy)
    assert merge_shards(first).merged


def test_not_enough_space_before_starting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = split_model(tmp_path / "split")
    before = digests(shards_of(first))
    needed = merge_needed_bytes(first)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(gguf_split.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 5000, 5000))
    result = merge_shards(first)
    assert not result.merged and not result.shards_deleted and result.path == first
    assert f"{needed:,} bytes" in result.message and "5,000 bytes" in result.message
    assert str(first) in result.message
    assert_untouched(first.parent, before)
    monkeypatch.undo()
    assert merge_shards(first).merged


def test_existing_output_is_refused(tmp_path: Path) -> None:
    first = split_model(tmp_path / "split")
    out = tmp_path / "split" / "tiny.gguf"
    out.write_bytes(b"precious")
    before = digests(shards_of(first))
    with pytest.raises(MergeError, match="already exists; refusing to overwrite"):
        merge_shards(first)
    assert out.read_bytes() == b"precious"
    assert digests(shards_of(first)) == before
    out.unlink()
    assert merge_shards(first).merged


def test_stale_partial_from_an_earlier_attempt_is_replaced(tmp_path: Path) -> None:
    first = split_model(tmp_path / "split")
    (tmp_path / "split" / ".tiny.gguf.partial").write_bytes(b"half a merge")
    result = merge_shards(first)
    assert result.merged and not (tmp_path / "split" / ".tiny.gguf.partial").exists()


def test_not_a_split_model(tmp_path: Path) -> None:
    whole = whole_model(tmp_path / "whole")
    with pytest.raises(MergeError, match="not a split model"):
        merge_shards(whole)


def test_damaged_split_count(tmp_path: Path) -> None:
    """A shard whose split.no was changed (same length) is named in the error."""
    first = split_model(tmp_path / "split")
    shard = shards_of(first)[3]
    data = bytearray(shard.read_bytes())
    key = b"split.no"
    at = data.index(key) + len(key) + 4  # after the key and its uint32 type
    data[at : at + 2] = struct.pack("<H", 1)
    shard.write_bytes(bytes(data))
    with pytest.raises(MergeError, match=f"{shard.name} does not belong.*split.no is 1, expected 3"):
        merge_shards(first)


GOLDEN = Path(__file__).parent / "fixtures" / "gguf_split_golden"


# shards llama-gguf-split wrote, and shards the gguf package wrote (split.count in another place in the header);
# llama-gguf-split --merge of either set wrote the same bytes, kept once (the fixture's README.md says how)
@pytest.mark.parametrize("folder", [GOLDEN, GOLDEN / "gguf-package"], ids=["llama-gguf-split", "gguf-package"])
def test_byte_identical_to_llama_gguf_split(tmp_path: Path, folder: Path) -> None:
    shards = sorted(folder.glob("tiny-0000*-of-00003.gguf"))
    assert len(shards) == 3
    for shard in shards:
        shutil.copy(shard, tmp_path / shard.name)
    result = merge_shards(tmp_path / "tiny-00001-of-00003.gguf", tmp_path / "merged.gguf")
    assert result.merged
    assert (tmp_path / "merged.gguf").read_bytes() == (GOLDEN / "tiny-merged-by-llama-gguf-split.gguf").read_bytes()


def test_the_gguf_package_shards_order_their_split_keys_unlike_the_tool() -> None:
    """What makes the second golden a case of its own: the merge has to move split.count from the middle of
    the gguf package's split keys, where the tool's own shards already have it last."""
    ours, tools = (gguf_keys(folder / "tiny-00001-of-00003.gguf")[-3:] for folder in (GOLDEN / "gguf-package", GOLDEN))
    assert ours == ["split.no", "split.count", "split.tensors.count"]
    assert tools == ["split.no", "split.tensors.count", "split.count"]
