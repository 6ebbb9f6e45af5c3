"""A queue of model downloads run one at a time on a worker thread, with pause, resume and cancel.

Pause stops the transfer and keeps the partial file (the next start resumes it with a Range request);
cancel also deletes the partial. A finished split model is merged (or left as shards when the disk cannot
hold both). Listeners get a `Job` snapshot after every change; they run on the worker thread and must be
quick (the TUI only queues the snapshot).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from qwen_chat.catalog.entries import CatalogError, find_model
from qwen_chat.catalog.loader import load_models
from qwen_chat.gguf.files import ModelFileError
from qwen_chat.gguf.merge_plan import MergeError
from qwen_chat.gguf.split import merge_shards
from qwen_chat.hub.client import HubError
from qwen_chat.hub.downloads import DownloadCancelled, DownloadError
from qwen_chat.hub.model_pull import already_downloaded, pull
from qwen_chat.system.paths import models_dir


@dataclass(frozen=True)
class Job:
    id: int
    ref: str  # catalog id:QUANT
    state: str = "queued"  # or downloading, merging, paused, done, failed, cancelled
    file: str = ""
    done: int = 0
    total: int = 0
    speed: float = 0.0  # bytes per second over this run
    message: str = ""
    path: Path | None = None
    file_done: int = 0
    file_total: int = 0

    @property
    def eta_seconds(self) -> float | None:
        return (self.total - self.done) / self.speed if self.speed > 0 and self.total else None

    @property
    def file_eta_seconds(self) -> float | None:
        return (self.file_total - self.file_done) / self.speed if self.speed > 0 and self.file_total else None


class DownloadQueue:
    def __init__(self, listener: Callable[[Job], None], dest_dir: Path | None = None) -> None:
        self.listener = listener
        self.dest_dir = dest_dir
        self._jobs: dict[int, Job] = {}
        self._order: list[int] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stop_current: threading.Event | None = None
        self._current: int | None = None
        self._next_id = 1
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="downloads", daemon=True)
        self._thread.start()

    # -- commands (any thread) --

    def add(self, ref: str) -> Job:
        model, quant = find_model(ref, load_models())  # unknown names fail here, at once
        name = f"{model.id}:{quant.name}" if quant else model.id
        with self._lock:
            for job in self._jobs.values():
                if job.ref == name and job.state in ("queued", "downloading", "merging", "paused"):
                    return job
            job = Job(self._next_id, name)
            self._next_id += 1
            self._jobs[job.id] = job
            self._order.append(job.id)
            self._wake.notify()
        self.listener(job)
        return job

    def pause(self, job_id: int) -> None:
        self._interrupt(job_id, "paused")

    def cancel(self, job_id: int) -> None:
        self._interrupt(job_id, "cancelled")

    def resume(self, job_id: int) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state not in ("paused", "failed"):
                return
            job = self._jobs[job_id] = replace(job, state="queued", message="")
            self._wake.notify()
        self.listener(job)

    def jobs(self) -> list[Job]:
        with self._lock:
            return [self._jobs[i] for i in self._order]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._stop_current is not None:
                self._stop_current.set()
            self._wake.notify()
        self._thread.join(5)

    def _interrupt(self, job_id: int, state: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state in ("done", "cancelled"):
                return
            if self._current == job_id and self._stop_current is not None:
                self._stop_current.set()
            job = self._jobs[job_id] = replace(job, state=state, speed=0.0)
        if state == "cancelled" and self._current != job_id:
            self._delete_partials(job)
        self.listener(job)

    # -- worker thread --

    def _update(self, job_id: int, **changes: Any) -> Job:
        with self._lock:
            job = self._jobs[job_id] = replace(self._jobs[job_id], **changes)
        self.listener(job)
        return job

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not any(self._jobs[i].state == "queued" for i in self._order):
                    self._wake.wait()
                if self._closed:
                    return
                job = next(self._jobs[i] for i in self._order if self._jobs[i].state == "queued")
                self._current, self._stop_current = job.id, threading.Event()
                stop = self._stop_current
            try:
                self._download(job, stop)
            finally:
                with self._lock:
                    self._current = self._stop_current = None

    def _download(self, job: Job, stop: threading.Event) -> None:
        self._update(job.id, state="downloading", message="")
        started, first = time.monotonic(), list[int]()  # the bytes already there: not counted for the speed
        last = [0.0]

        def progress(done: int, total: int, name: str) -> None:
            now = time.monotonic()
            if not first:
                first.append(done)
            if now - last[0] < 0.25 and done < total:
                return
            last[0] = now
            speed = (done - first[0]) / max(now - started, 1e-6)
            self._update(job.id, file=name, done=done, total=total, speed=speed)

        file_state = {"done": 0, "total": 0}

        def file_progress(done: int, total: int, _name: str) -> None:
            file_state.update(done=done, total=total)

        def progress_with_file(done: int, total: int, name: str) -> None:
            with self._lock:
                current = self._jobs[job.id]
                self._jobs[job.id] = replace(current, file_done=file_state["done"], file_total=file_state["total"])
            progress(done, total, name)

        try:
            # a model finished before needs no listing: the hub may be unreachable or failing right now
            already = already_downloaded(job.ref, None, self.dest_dir)
            paths = already or pull(job.ref, None, self.dest_dir, progress=progress_with_file, cancel=stop,
                                    file_progress=file_progress)
        except DownloadCancelled:
            self._after_stop(job.id)
            return
        except (CatalogError, HubError, DownloadError, ModelFileError, OSError) as exc:
            if stop.is_set():
                self._after_stop(job.id)
            else:
                self._update(job.id, state="failed", speed=0.0, message=str(exc))
            return
        self._finish(job, paths, stop, already=already is not None)

    def _finish(self, job: Job, paths: list[Path], stop: threading.Event, already: bool) -> None:
        """The files are on disk and verified: merge a split set, and say so."""
        path = paths[0]
        if len(paths) > 1:
            self._update(job.id, state="merging", speed=0.0)
            try:
                result = merge_shards(paths[0], delete_shards=True, cancel=stop)  # shards it downloaded itself
                path, note = result.path, result.message
            except MergeError as exc:
                note = f"{exc} The shards load as they are."
            self._update(job.id, state="done", path=path, message=note, done=job.total or self._jobs[job.id].total)
            return
        if already:  # nothing came in, so no progress was reported: show it complete
            size = path.stat().st_size
            self._update(job.id, state="done", path=path, speed=0.0, done=size, total=size, file=path.name,
                         message="already downloaded and verified; nothing fetched")
            return
        self._update(job.id, state="done", path=path, speed=0.0, message="downloaded and verified")

    def _after_stop(self, job_id: int) -> None:
        job = self._jobs[job_id]
        if job.state == "cancelled":
            self._delete_partials(job)
        self.listener(job)

    def _delete_partials(self, job: Job) -> None:
        try:
            model, quant = find_model(job.ref, load_models())
        except CatalogError:
            return
        folder = self.dest_dir or models_dir()
        for f in (quant.files if quant else ()):
            name = Path(f.path).name
            for leftover in (folder / f".{name}.partial", folder / f".{name}.partial.json"):
                leftover.unlink(missing_ok=True)
