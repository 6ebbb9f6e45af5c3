"""A split set with a foreign or swapped shard is refused before llama.cpp sees it, naming the shard; and when
llama.cpp itself refuses a file, its own reason (from its log) is in the message. Real shards written by the
`gguf` package (tests/split_fixture.py), real llama.cpp."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from qwen_chat.cli.main import main
from qwen_chat.engines.llama import Engine
from qwen_chat.engines.protocol import Failed, Loaded, LoadRequest
from qwen_chat.gguf.files import ModelFileError, read_model_info
from qwen_chat.gguf.merge_plan import MergeError
from qwen_chat.gguf.split import merge_shards
from qwen_chat.session.model_loading import prepare_load
from split_fixture import shards_of, split_model

from helpers import Recorder
from tiny_models import write_tiny_qwen3


def swap_names(a: Path, b: Path) -> None:
    aside = a.with_name("swapping.tmp")
    a.rename(aside)
    b.rename(a)
    aside.rename(b)


def with_foreign_shard(folder: Path) -> Path:
    """A 24-tensor set whose shard 2 comes from a 35-tensor set of the same shard count; its first shard."""
    first = split_model(folder / "split", 7)  # 24 tensors in 4 shards
    other = split_model(folder / "other", 9, layers=3, seed=1)  # 35 tensors, also in 4 shards
    assert len(shards_of(other)) == len(shards_of(first)) == 4
    shutil.copyfile(shards_of(other)[1], shards_of(first)[1])
    return first


def with_swapped_shards(folder: Path) -> Path:
    first = split_model(folder / "swapped", 7)
    shards = shards_of(first)
    swap_names(shards[1], shards[2])
    return first


def unknown_architecture(folder: Path) -> Path:
    """A sound GGUF whose general.architecture llama.cpp does not know (as a model for a newer llama.cpp)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = write_tiny_qwen3(folder / "newer.gguf")
    data = bytearray(path.read_bytes())
    key = b"general.architecture"
    at = data.index(key) + len(key) + 4 + 8  # after the key, its uint32 type and the string's uint64 length
    assert data[at:at + 5] == b"qwen3"
    data[at:at + 5] = b"qwenx"
    path.write_bytes(bytes(data))
    return path


def load_failure(path: Path) -> str:
    """What the real engine says when llama.cpp is handed `path` (no check of ours in between)."""
    rec = Recorder()
    eng = Engine(rec).start()
    try:
        eng.load(LoadRequest(path, n_ctx=256))
        event = rec.until(Loaded)[0][-1]
    finally:
        eng.shutdown()
    assert isinstance(event, Failed), event
    return event.message


# --- our check, before the load -----------------------------------------------------------------------------


def test_swapped_shards_are_named_before_loading(tmp_path: Path) -> None:
    first = with_swapped_shards(tmp_path)
    name = shards_of(first)[1].name
    expected = (f"{name} does not belong in this place: shard 2 says it is part 3 of 4 "
                r"\(its split.no is 2, expected 1\). The shards were renamed or swapped")
    with pytest.raises(ModelFileError, match=expected):
        read_model_info(first)
    with pytest.raises(ModelFileError, match=expected):
        prepare_load(first)  # the TUI's way in


def test_foreign_shard_is_named_before_loading(tmp_path: Path) -> None:
    first = with_foreign_shard(tmp_path)
    name = shards_of(first)[1].name
    with pytest.raises(ModelFileError, match=f"{name} does not belong to this split model: it belongs to another "
                                             r"split set \(35 tensors, not 24\); put the right shard in its place"):
        read_model_info(first)


def test_the_chat_refuses_a_bad_set_before_the_screen_opens(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    first = with_swapped_shards(tmp_path)
    assert main(["--model", str(first)]) == 1
    err = capsys.readouterr().err
    assert "shard 2 says it is part 3 of 4" in err and "may be damaged" not in err


def test_merge_and_load_give_the_same_reason(tmp_path: Path) -> None:
    first = with_swapped_shards(tmp_path)
    with pytest.raises(ModelFileError) as loading:
        read_model_info(first)
    with pytest.raises(MergeError) as merging:
        merge_shards(first)
    assert str(merging.value) == str(loading.value)


def test_a_shard_in_the_place_of_a_missing_one_repeats_tensors(tmp_path: Path) -> None:
    """Shard 3 copied over shard 2 claims the wrong place; shard 2's tensors are then nowhere."""
    first = split_model(tmp_path / "split", 7)
    shards = shards_of(first)
    shutil.copyfile(shards[2], shards[1])
    with pytest.raises(ModelFileError, match=f"{shards[1].name} does not belong in this place: shard 2 says it "
                                             "is part 3 of 4"):
        read_model_info(first)


def test_first_shard_under_a_plain_name(tmp_path: Path) -> None:
    first = split_model(tmp_path / "split", 7)
    renamed = first.with_name("tiny.gguf")
    first.rename(renamed)
    with pytest.raises(ModelFileError, match="tiny.gguf is part 1 of a 4-shard split model under another name: "
                                             ".*the first ends in -00001-of-00004.gguf"):
        read_model_info(renamed)


def test_a_sound_set_and_a_single_file_still_read(tmp_path: Path) -> None:
    first = split_model(tmp_path / "split", 7)
    assert read_model_info(first).shards == tuple(shards_of(first))
    single = write_tiny_qwen3(tmp_path / "single.gguf")
    assert read_model_info(single).shards == (single,)


# --- llama.cpp's own reason, when it refuses a file ---------------------------------------------------------


def test_llama_cpp_reason_for_swapped_shards(tmp_path: Path) -> None:
    message = load_failure(with_swapped_shards(tmp_path))
    assert "could not load tiny-00001-of-00004.gguf: invalid split file idx: 2" in message, message
    assert "expected 1" in message and "llama.log" in message


def test_llama_cpp_reason_for_a_foreign_shard(tmp_path: Path) -> None:
    message = load_failure(with_foreign_shard(tmp_path))
    assert "is duplicated" in message and "tensor 'blk." in message, message


def test_llama_cpp_reason_for_an_unknown_architecture(tmp_path: Path) -> None:
    path = unknown_architecture(tmp_path)
    assert read_model_info(path).architecture == "qwenx"  # nothing of ours refuses it: llama.cpp does
    message = load_failure(path)
    assert "could not load newer.gguf: unknown model architecture: 'qwenx'. The file may be damaged or made " \
           "for a newer llama.cpp" in message, message
    assert "failed to load model" not in message.lower()  # the generic lines are not the reason


def test_each_load_reports_its_own_reason(tmp_path: Path) -> None:
    """One engine, two failed loads: the second message quotes only the second load's error."""
    newer = unknown_architecture(tmp_path / "a")
    swapped = with_swapped_shards(tmp_path / "b")
    rec = Recorder()
    eng = Engine(rec).start()
    try:
        messages = []
        for path in (newer, swapped):
            eng.load(LoadRequest(path, n_ctx=256))
            event = rec.until(Loaded)[0][-1]
            assert isinstance(event, Failed), event
            messages.append(event.message)
    finally:
        eng.shutdown()
    assert "qwenx" in messages[0] and "qwenx" not in messages[1]
    assert "invalid split file idx" in messages[1]
