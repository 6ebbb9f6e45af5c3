"""The GGUF files found on disk (hub/local_models.py): the models folder and the Hugging Face cache, split sets
counted once, catalog quants recognised, header fields read."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from qwen_chat.hub.local_models import HF_CACHE, MODELS_FOLDER, find_local_ggufs, hf_cache_dir, quant_of
from split_fixture import split_model

from tiny_models import write_tiny_qwen3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_qwen3(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


def _cache_file(cache: Path, repo: str, rev: str, name: str, source: Path) -> Path:
    """A file laid out as huggingface_hub does: a blob, and a link to it in the snapshot folder."""
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    blob = repo_dir / "blobs" / f"blob-{name}"
    blob.parent.mkdir(parents=True, exist_ok=True)
    if not blob.exists():
        shutil.copy(source, blob)
    link = repo_dir / "snapshots" / rev / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    return link


def test_models_folder_and_cache_listed_once_each(tiny: Path, tmp_path: Path) -> None:
    folder, cache = tmp_path / "models", tmp_path / "hf" / "hub"
    folder.mkdir()
    shutil.copy(tiny, folder / "Qwen3-0.6B-Q8_0.gguf")  # the catalog's name for qwen3-0.6b:Q8_0
    shutil.copy(tiny, folder / "my-finetune.gguf")
    (folder / ".Qwen3-8B-Q4_K_M.gguf.partial").write_bytes(b"GGUF")  # a download in progress: not a model
    (folder / "notes.txt").write_text("not a model")
    first = split_model(folder / "sub", per_shard=7)
    for rev in ("aaa", "bbb"):  # the same blob in two revisions is one file
        _cache_file(cache, "someone/Other-GGUF", rev, "other-Q5_K_M.gguf", tiny)

    found = find_local_ggufs(folder, cache)
    by_name = {m.path.name: m for m in found}
    assert sorted(by_name) == ["Qwen3-0.6B-Q8_0.gguf", "my-finetune.gguf", "other-Q5_K_M.gguf", first.name]
    catalog = by_name["Qwen3-0.6B-Q8_0.gguf"]
    assert catalog.catalog_ref == "qwen3-0.6b:Q8_0" and catalog.in_catalog and catalog.where == MODELS_FOLDER
    own = by_name["my-finetune.gguf"]
    assert not own.in_catalog and own.architecture == "qwen3" and own.name == "tiny-qwen3-test"
    assert own.quant == "F32" and own.size == tiny.stat().st_size and own.usable  # from general.file_type
    split = by_name[first.name]
    assert split.split and len(split.files) > 1 and split.size == sum(f.stat().st_size for f in split.files)
    cached = by_name["other-Q5_K_M.gguf"]
    assert cached.in_hf_cache and cached.where == HF_CACHE and cached.repo == "someone/Other-GGUF"
    assert cached.quant == "Q5_K_M"
    assert [m.path.name for m in find_local_ggufs(folder, cache, include_hf_cache=False)].count(
        "other-Q5_K_M.gguf") == 0


def test_incomplete_and_damaged_files_are_listed_with_the_problem(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    first = split_model(folder, per_shard=7)
    shards = sorted(folder.glob("tiny-*-of-*.gguf"))
    shards[-1].unlink()
    (folder / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")  # ends inside its header
    found = {m.path.name: m for m in find_local_ggufs(folder, tmp_path / "no-cache")}
    assert found[first.name].problem is not None and "missing" in found[first.name].problem
    assert found["broken.gguf"].problem is not None and "header" in found["broken.gguf"].problem
    assert not found["broken.gguf"].usable


def test_a_missing_folder_is_no_models(tmp_path: Path) -> None:
    assert find_local_ggufs(tmp_path / "none", tmp_path / "none-either") == []


def test_cache_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hf_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))
    assert hf_cache_dir() == tmp_path / "c"


@pytest.mark.parametrize(("name", "file_type", "quant"), [
    ("Qwen3-8B-Q4_K_M.gguf", None, "Q4_K_M"), ("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", None, "Q4_K_M"),
    ("Qwen3-30B-A3B-UD-Q4_K_XL-00001-of-00002.gguf", None, "UD-Q4_K_XL"), ("model-bf16.gguf", None, "BF16"),
    ("Qwen3-0.6B-Q8_0.gguf", None, "Q8_0"), ("plain.gguf", 15, "Q4_K_M"), ("plain.gguf", None, ""),
])
def test_quant_from_the_name_else_the_header(name: str, file_type: int | None, quant: str) -> None:
    assert quant_of(name, file_type) == quant
