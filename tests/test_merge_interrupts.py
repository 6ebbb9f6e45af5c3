"""Ctrl-C at every step of a merge: what the message says is what is on the disk. And `qwen-chat merge`'s
shards and exit codes: kept by default, deleted only when asked, 1 when refused, 130 when interrupted."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import pytest

from qwen_chat.cli.main import main
from qwen_chat.gguf import split as gguf_split
from qwen_chat.gguf.merge_plan import merge_needed_bytes
from qwen_chat.gguf.split import MergeInterrupted, merge_shards
from split_fixture import digests, shards_of, split_model

# (function in gguf_split, which call of it is interrupted) in the order a merge runs them; fsync_folder runs once
# after the rename and once more after the shards are deleted, _delete once per shard (4 shards)
STEPS = [("plan_merge", 1), ("_copy_data", 1), ("_verify", 1), ("_rename", 1), ("fsync_folder", 1),
         ("_delete", 1), ("_delete", 2), ("_delete", 4), ("fsync_folder", 2)]


@pytest.fixture
def reference(tmp_path: Path) -> bytes:
    """The merged file an uninterrupted merge writes."""
    first = split_model(tmp_path / "reference")
    merge_shards(first)
    return (tmp_path / "reference" / "tiny.gguf").read_bytes()


def interrupt(monkeypatch: pytest.MonkeyPatch, name: str, nth: int, after: bool) -> None:
    """Ctrl-C on the `nth` call of gguf_split.`name`, just before it runs or just after it returned."""
    real = getattr(gguf_split, name)
    calls = [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == nth and not after:
            raise KeyboardInterrupt
        result = real(*args, **kwargs)
        if calls[0] == nth:
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(gguf_split, name, wrapped)


def assert_message_is_true(message: str, folder: Path, names: list[str], out: Path, reference: bytes) -> None:
    present = [n for n in names if (folder / n).exists()]
    gone = [n for n in names if n not in present]
    assert not list(folder.glob(".*partial")), "a partial file was left behind"
    if not out.exists():
        assert gone == [], "a shard went missing although nothing was merged"
        assert "Nothing was lost" in message and "untouched" in message and "complete" not in message
        return
    assert out.read_bytes() == reference  # it only appears complete and verified
    assert f"{out} is complete and verified" in message
    if not gone:
        assert "shards are still there" in message and "deleted" not in message.lower()
    elif not present:
        assert "shards were deleted" in message
    else:
        deleted, still = message.split("Deleted: ", 1)[1].split("; still there: ", 1)
        assert sorted(n for n in names if n in deleted) == sorted(gone)
        assert sorted(n for n in names if n in still) == sorted(present)


@pytest.mark.parametrize("delete_shards", [False, True])
@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize(("name", "nth"), STEPS)
def test_ctrl_c_at_every_step_is_reported_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: bytes,
                                                   name: str, nth: int, after: bool, delete_shards: bool) -> None:
    first = split_model(tmp_path / "split")
    names = [p.name for p in shards_of(first)]
    assert len(names) == 4
    interrupt(monkeypatch, name, nth, after)
    out = tmp_path / "split" / "tiny.gguf"
    try:
        result = merge_shards(first, delete_shards=delete_shards)
    except MergeInterrupted as exc:
        assert_message_is_true(str(exc), first.parent, names, out, reference)
    else:  # that step does not run in this mode (no deletion when the shards are kept)
        assert not delete_shards and name in ("_delete", "fsync_folder") and (name, nth) != ("fsync_folder", 1)
        assert result.merged and not result.shards_deleted


def test_interrupted_cli_merge_exits_130_and_says_what_is_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    first = split_model(tmp_path / "split")
    interrupt(monkeypatch, "_delete", 2, after=True)
    assert main(["merge", str(first), "--delete-shards"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("Merge interrupted while deleting the shards") and "tiny-00003-of-00004.gguf" in last
    assert [p.name for p in shards_of(first)] == ["tiny-00003-of-00004.gguf", "tiny-00004-of-00004.gguf"]


def test_cli_merge_keeps_the_shards_unless_told(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = split_model(tmp_path / "split")
    before = digests(shards_of(first))
    assert main(["merge", str(first), str(tmp_path / "a.gguf")]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(tmp_path / "a.gguf")
    assert "The shards were kept" in captured.err and "--delete-shards" in captured.err
    assert main(["merge", str(first), str(tmp_path / "b.gguf"), "--keep-shards"]) == 0  # old flag: a no-op
    assert digests(shards_of(first)) == before
    assert main(["merge", str(first), str(tmp_path / "c.gguf"), "--delete-shards"]) == 0
    assert "The shards were deleted" in capsys.readouterr().err
    assert shards_of(first) == []
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "c.gguf").read_bytes()


def test_cli_merge_refused_for_space_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    first = split_model(tmp_path / "split")
    before = digests(shards_of(first))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(gguf_split.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 5000, 5000))
    assert main(["merge", str(first)]) == 1
    captured = capsys.readouterr()
    assert "Not merged" in captured.err and f"{merge_needed_bytes(first):,} bytes" in captured.err
    assert captured.out == ""  # no path for a script to pick up
    assert digests(shards_of(first)) == before


def test_pull_style_merge_deletes_only_after_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """delete_shards (what pull uses for the shards it downloaded): a failed check deletes nothing."""
    first = split_model(tmp_path / "split")
    before = digests(shards_of(first))

    def failing_check(plan, path: Path) -> None:
        raise gguf_split.MergeError("the merged file failed its check (simulated)")

    monkeypatch.setattr(gguf_split, "_verify", failing_check)
    with pytest.raises(gguf_split.MergeError, match="simulated"):
        merge_shards(first, delete_shards=True)
    assert digests(shards_of(first)) == before and not (tmp_path / "split" / "tiny.gguf").exists()
    monkeypatch.undo()
    assert merge_shards(first, delete_shards=True).shards_deleted and shards_of(first) == []
