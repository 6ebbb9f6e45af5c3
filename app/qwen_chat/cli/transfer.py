"""`qwen-chat pull`, `merge` and `login`: get a model onto the disk, join split files, store a hub token."""

from __future__ import annotations

import getpass
import sys
import threading
import time
from pathlib import Path

from qwen_chat.catalog.entries import CatalogError, find_model
from qwen_chat.catalog.loader import load_models
from qwen_chat.cli import output
from qwen_chat.cli.output import one_line
from qwen_chat.gguf.files import ModelFileError
from qwen_chat.gguf.merge_plan import MergeError
from qwen_chat.gguf.split import MergeInterrupted, merge_shards
from qwen_chat.hub.client import HubError, store_token
from qwen_chat.hub.downloads import DownloadCancelled, DownloadError, human
from qwen_chat.hub.model_pull import already_downloaded, pull
from qwen_chat.planning.plan_inputs import arch_from_catalog, candidates_from_catalog
from qwen_chat.planning.planner import DoesNotFit, plan
from qwen_chat.system.hardware import detect


class ProgressLine:
    """One updating line: file, bytes, speed, ETA (for the file and in total)."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.started = self.last = time.monotonic()
        self.first_done: int | None = None
        self.file_done = self.file_total = 0

    def file(self, done: int, total: int, _name: str) -> None:
        self.file_done, self.file_total = done, total

    def __call__(self, done: int, total: int, name: str = "merging") -> None:
        now = time.monotonic()
        if self.first_done is None:
            self.first_done = done  # bytes already on disk (resumed) do not count towards the speed
        if now - self.last < self.every and done < total:
            return
        self.last = now
        speed = (done - self.first_done) / max(now - self.started, 1e-6)
        eta = (total - done) / speed if speed > 0 else 0
        file_part = ""
        if self.file_total and self.file_total != total:
            file_eta = (self.file_total - self.file_done) / speed if speed > 0 else 0
            file_part = (f"{human(self.file_done)} of {human(self.file_total)} "
                         f"(ETA {int(file_eta // 60)}:{int(file_eta % 60):02d}), all: ")
        stream = sys.stderr  # looked up now: a stream bound at import time may be closed by then
        stream.write(f"\r{one_line(name)}: {file_part}{human(done)} of {human(total)}  {human(speed)}/s  "
                          f"ETA {int(eta // 60)}:{int(eta % 60):02d}   ")
        stream.flush()


def pick_quant(ref: str) -> tuple[str, str]:
    """The catalog id and the quant to download: the one asked for, else the planner's pick for this machine."""
    model, quant = find_model(ref, load_models())
    if quant is not None:
        return model.id, quant.name
    try:
        return model.id, plan(arch_from_catalog(model), candidates_from_catalog(model), detect()).quant
    except DoesNotFit as exc:
        raise CatalogError(f"{model.id} does not fit this machine ({exc}); name a quant to download anyway, "
                           f"e.g. {model.id}:Q4_K_M") from None


def run_pull(ref: str, keep_shards: bool = False) -> int:
    cancel = threading.Event()
    try:
        model_id, quant = pick_quant(ref)
        paths = already_downloaded(model_id, quant)  # found without the network: nothing is listed or fetched
        if paths:
            output.note(f"{model_id}:{quant} is already downloaded and verified; nothing to fetch.")
        else:
            output.note(f"pulling {model_id}:{quant}")
            line = ProgressLine()
            paths = pull(model_id, quant, progress=line, cancel=cancel, file_progress=line.file)
    except (KeyboardInterrupt, DownloadCancelled):
        cancel.set()
        output.note("\nstopped; the partial file is kept: run the same command to resume.")
        return 130
    except (CatalogError, HubError, DownloadError, ModelFileError) as exc:
        print(file=sys.stderr)
        output.error(exc)
        return 1
    print(file=sys.stderr)
    model = paths[0]
    if len(paths) > 1:
        try:
            # pull deletes only the shards it downloaded itself, and only after the merged file is verified
            result = merge_shards(paths[0], delete_shards=not keep_shards, progress=ProgressLine())
        except MergeInterrupted as exc:
            output.note(f"\n{exc}")
            return 130
        except MergeError as exc:  # raised before the rename only: no shard was touched
            print(file=sys.stderr)
            output.error(f"{exc}; the shards are intact and load as they are.")
            result = None
        if result is not None:
            output.note(f"\n{result.message}")
            model = result.path
    output.data(f"ready: qwen-chat --model {model}\n")
    return 0


def run_merge(first: Path, out: Path | None, *, delete_shards: bool = False) -> int:
    """Exit status 0 merged, 1 not merged (the message says why and what to do), 130 interrupted."""
    try:
        result = merge_shards(first.expanduser(), out.expanduser() if out else None, delete_shards=delete_shards,
                              progress=ProgressLine())
    except MergeInterrupted as exc:  # its message says what is on the disk now
        output.note(f"\n{exc}")
        return 130
    except (MergeError, ModelFileError) as exc:
        print(file=sys.stderr)
        output.error(exc)
        return 1
    hint = " The merged file does not need them: delete them to free the space (or merge with --delete-shards)."
    output.note(f"\n{result.message}{hint if result.merged and not delete_shards else ''}")
    if not result.merged:  # refused for lack of space: the shards are as they were, and the script must know
        return 1
    output.data(f"{result.path}\n")
    return 0


def run_login() -> int:
    token = getpass.getpass("Hugging Face token (from https://huggingface.co/settings/tokens): ").strip()
    if not token:
        output.error("no token given; nothing stored.")
        return 1
    try:
        store_token(token)
    except HubError as exc:
        output.error(exc)
        return 1
    print("token stored in the system keyring (never in a file).", file=sys.stderr)
    return 0
