"""A catalog model's quant pulled into the models folder: which files it takes, whether a pull already finished
them, and the rest downloaded one by one (downloads.py downloads each file)."""

from __future__ import annotations

import time
from pathlib import Path

from qwen_chat.catalog.entries import CatalogModel, Quant, find_model
from qwen_chat.catalog.loader import load_models
from qwen_chat.hub import client as hub
from qwen_chat.hub import downloads
from qwen_chat.hub.client import HubError, RemoteFile
from qwen_chat.hub.download_state import local_copy, merged_copy, remaining_bytes, verified_copy
from qwen_chat.hub.downloads import Cancel, DownloadError, Progress, check_space, download_file
from qwen_chat.hub.listing_match import NoSuchQuant, quant_files
from qwen_chat.system.paths import models_dir


def choose_quant(model: CatalogModel, quant: str | None) -> Quant:
    if quant is None:
        return model.quants.get("Q4_K_M") or next(iter(model.quants.values()))
    found = find_model(f"{model.id}:{quant}", {model.id: model})[1]
    assert found is not None  # the ref names a quant: find_model returns it or raises with the choices
    return found


def _target(ref: str, quant: str | None, dest_dir: Path | None) -> tuple[CatalogModel, Quant, Path]:
    model, named = find_model(ref, load_models())
    chosen = choose_quant(model, quant) if quant is not None or named is None else named
    return model, chosen, Path(dest_dir) if dest_dir is not None else models_dir()


def _on_disk(chosen: Quant, dest_dir: Path) -> list[Path] | None:
    merged = merged_copy(chosen, dest_dir)
    if merged is not None:
        return [merged]  # merged earlier and its shards removed: nothing to fetch again
    return verified_copy(chosen, dest_dir)  # every file hashed against the hub's sha256 before


def already_downloaded(ref: str, quant: str | None = None, dest_dir: Path | None = None) -> list[Path] | None:
    """The quant's files when a pull finished them before (verified, or merged), found without the network; else
    None. `pull` returns these too, so callers ask only to say "already downloaded"."""
    _, chosen, dest_dir = _target(ref, quant, dest_dir)
    return _on_disk(chosen, dest_dir)


def list_remote_files(repo: str, token: str | None) -> tuple[str, list[RemoteFile]]:
    """The hub's listing (hub.list_files), tried again after a server error like a file download is.

    A dropped connection is tried again once only: without a network every try fails, and the user waits.
    """
    attempts = 0
    while True:
        try:
            return hub.list_files(repo, token=token)
        except HubError as exc:
            limit = downloads.SERVER_ERROR_RETRIES if exc.status is not None else 1
            if not exc.retryable or attempts >= limit:
                raise
            attempts += 1
            delays = downloads.RETRY_DELAYS  # read when used: tests shorten them
            time.sleep(delays[min(attempts, len(delays)) - 1])


def pull(ref: str, quant: str | None = None, dest_dir: Path | None = None, progress: Progress | None = None,
         cancel: Cancel = None, file_progress: Progress | None = None) -> list[Path]:
    """Download a catalog model's quant (all parts of a split one) into the models folder; returns the paths.

    `progress(done, total, file_name)` counts bytes over all files of the quant; `file_progress` the same for
    the file being downloaded.
    """
    model, chosen, dest_dir = _target(ref, quant, dest_dir)
    on_disk = _on_disk(chosen, dest_dir)
    if on_disk is not None:
        return on_disk
    token = hub.token()
    try:
        commit, listing = list_remote_files(model.repo, token)
    except HubError as exc:
        if str(exc) == hub.OFFLINE_MESSAGE:
            local = local_copy(chosen, dest_dir)
            if local is not None:
                return local
        raise
    try:
        remotes = quant_files(chosen, listing, model.name, model.repo, commit)
    except NoSuchQuant as exc:
        raise DownloadError(str(exc)) from None
    dest_dir.mkdir(parents=True, exist_ok=True)
    check_space(dest_dir, sum(remaining_bytes(model.repo, r, commit, dest_dir) for r in remotes),
                 f"{model.id}:{chosen.name}")
    total = sum(r.size for r in remotes)
    paths = []
    finished = 0
    for remote in remotes:
        def report(done: int, size: int, name: str, base: int = finished) -> None:
            if file_progress:
                file_progress(done, size, name)
            if progress:
                progress(base + done, total, name)

        paths.append(download_file(model.repo, remote, commit, dest_dir, token=token, progress=report,
                                   cancel=cancel))
        finished += remote.size
    return paths
