"""Community GGUF repos name their files their own way: an estimated catalog entry is resolved against the hub's
listing at pull time (files and sizes), an exact one must match it."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen_chat.catalog.entries import Quant, QuantFile
from qwen_chat.cli.main import main
from qwen_chat.hub.client import RemoteFile
from qwen_chat.hub.listing_match import NoSuchQuant, quant_files

from helpers import write_catalog

GUESS = Quant("Q4_K_M", (QuantFile("Qwen3.5-9B-Q4_K_M.gguf", 5_500_000_000),), estimated=True)


def listing(*paths: str) -> list[RemoteFile]:
    return [RemoteFile(path, 1000 + i) for i, path in enumerate(paths)]


def test_the_catalogs_paths_win_when_the_repo_has_them() -> None:
    found = quant_files(GUESS, listing("Qwen3.5-9B-Q4_K_M.gguf", "Qwen3.5-9B-UD-Q4_K_M.gguf"), "Qwen3.5-9B", "r", "c")
    assert [f.path for f in found] == ["Qwen3.5-9B-Q4_K_M.gguf"]


def test_an_estimated_entry_takes_the_repos_own_names_and_sizes_but_never_mmproj_or_ud() -> None:
    files = listing("qwen3.5-9b-q4_k_m.gguf", "mmproj-Qwen3.5-9B-Q4_K_M.gguf", "Qwen3.5-9B-UD-Q4_K_M.gguf",
                    "Qwen3.5-9B-Q8_0.gguf")
    (found,) = quant_files(GUESS, files, "Qwen3.5-9B", "r", "c")
    assert (found.path, found.size) == ("qwen3.5-9b-q4_k_m.gguf", 1000)


def test_a_split_set_counts_only_when_every_part_is_listed() -> None:
    parts = [f"Q4_K_M/Qwen3.5-122B-A10B-Q4_K_M-0000{i}-of-00003.gguf" for i in (2, 1, 3)]
    guess = Quant("Q4_K_M", (QuantFile("x.gguf", 1),), estimated=True)
    found = quant_files(guess, listing(*parts), "Qwen3.5-122B-A10B", "r", "c")
    assert [f.path for f in found] == sorted(parts)
    with pytest.raises(NoSuchQuant, match="no Q4_K_M files"):
        quant_files(guess, listing(*parts[:2]), "Qwen3.5-122B-A10B", "r", "c")


def test_an_exact_entry_that_does_not_match_says_the_catalog_is_out_of_date() -> None:
    exact = Quant("Q4_K_M", (QuantFile("Qwen3-8B-Q4_K_M.gguf", 1),), estimated=False)
    with pytest.raises(NoSuchQuant, match="out of date"):
        quant_files(exact, listing("Qwen3-8B-Q4_K_M-v2.gguf"), "Qwen3-8B", "Qwen/Qwen3-8B-GGUF", "abc")


def test_a_missing_quant_lists_what_the_repo_has() -> None:
    with pytest.raises(NoSuchQuant, match=r"its quants: Q6_K, Q8_0"):
        quant_files(GUESS, listing("Qwen3.5-9B-Q8_0.gguf", "Qwen3.5-9B-Q6_K.gguf", "README.md"), "Qwen3.5-9B", "r",
                    "c")


def test_pull_downloads_what_the_listing_names(hub: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end against the loopback hub: the guessed path is wrong, the download still gets the right file
    with the listing's size and hash."""
    content = b"GGUF" + bytes(4096)
    hub.add_repo("community/Tiny-GGUF", {"tiny-model-Q4_K_M.gguf": content, "README.md": b"hi"})
    write_catalog("tiny", "community/Tiny-GGUF", {"Q4_K_M": [("Tiny-Q4_K_M.gguf", 999)]}, name="Tiny",
                  estimated=("Q4_K_M",))
    monkeypatch.setenv("QWEN_CHAT_MODELS_DIR", str(tmp_path / "models"))
    assert main(["pull", "tiny:Q4_K_M"]) == 0
    downloaded = tmp_path / "models" / "tiny-model-Q4_K_M.gguf"
    assert downloaded.is_file() and downloaded.read_bytes() == content
