"""Resumable, verified downloads of GGUF files from the hub.

huggingface_hub 2.x does not resume across processes, so a multi-GB model interrupted by a quit, crash or reboot
would start over. Here each file is written to `dest/.<name>.partial` with a sidecar `.<name>.partial.json` naming
the repo, commit, size and sha256 it belongs to; the next run hashes the bytes already there once and continues with
`Range: bytes=N-`. The sha256 is updated while writing, the result is checked against the hub's LFS hash and the
GGUF magic, then renamed into place atomically. Files are stored flat: `dest/<basename>`. What stays in the
folder between runs (partials, sidecars, the record of verified files) is download_state.py's; a catalog model's
quant, the files it takes and the ones already there, is model_pull.py's.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huggingface_hub.errors import OfflineModeIsEnabled

from qwen_chat.gguf.files import ModelFileError, check_magic
from qwen_chat.hub import client as hub
from qwen_chat.hub.client import HubError, RemoteFile
from qwen_chat.hub.download_state import (
    download_paths,
    flush_partial,
    load_verified,
    record_verified,
    resumable_bytes,
    sidecar,
)
from qwen_chat.system.durable import fsync_folder

MiB = 1024 * 1024
CHUNK = 8 * MiB
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0)  # after a dropped connection or a 5xx; tests shorten it
SERVER_ERROR_RETRIES = 3

Progress = Callable[[int, int, str], None]
Cancel = Any  # a threading.Event (is_set) or a callable returning True to stop


class DownloadError(Exception):
    """A download that cannot finish; the message says what happened and what to do."""


class DownloadCancelled(DownloadError):
    pass


def _write(f: Any, data: bytes) -> None:
    """One write to the partial file (a seam for tests that simulate a full disk)."""
    f.write(data)


def human(n: float) -> str:
    for unit in ("bytes", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


def _cancelled(cancel: Cancel) -> bool:
    if cancel is None:
        return False
    is_set = getattr(cancel, "is_set", None)
    return bool(is_set() if callable(is_set) else cancel())


def _hash_file(path: Path, cancel: Cancel = None, limit: int | None = None) -> Any:
    digest = hashlib.sha256()
    remaining = limit
    with path.open("rb") as f:
        while remaining is None or remaining > 0:
            block = f.read(CHUNK if remaining is None else min(CHUNK, remaining))
            if not block:
                break
            digest.update(block)
            if remaining is not None:
                remaining -= len(block)
            if _cancelled(cancel):
                raise DownloadCancelled(f"cancelled while checking {path.name}")
    return digest


# --- a file already there ----------------------------------------------------------------------------------------


def _already_there(path: Path, remote: RemoteFile, dest_dir: Path, cancel: Cancel) -> bool:
    """The final file exists with the right size and (when known) sha256, hashed at most once."""
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_size != remote.size:
        return False
    if remote.sha256 is None:
        return True
    record = load_verified(dest_dir).get(path.name)
    if (isinstance(record, dict) and record.get("size") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns
            and record.get("sha256") == remote.sha256):
        return True
    if _hash_file(path, cancel).hexdigest() != remote.sha256:
        return False
    record_verified(dest_dir, path, remote.sha256)
    return True


def _from_hf_cache(repo: str, remote: RemoteFile, commit: str, final: Path, dest_dir: Path, cancel: Cancel) -> bool:
    """Reuse a copy in the user's Hugging Face cache (hard link, else copy) when it is the same file."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo, remote.path, revision=commit)
    except Exception:  # the cache is only a shortcut
        return False
    if not isinstance(cached, str):
        return False
    source = Path(os.path.realpath(cached))
    try:
        if source.stat().st_size != remote.size:
            return False
    except OSError:
        return False
    if remote.sha256 is not None and _hash_file(source, cancel).hexdigest() != remote.sha256:
        return False
    tmp = final.with_name(f".{final.name}.linking")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(source, tmp)
    except OSError:
        try:
            check_space(dest_dir, remote.size, final.name)
            shutil.copyfile(source, tmp)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise DownloadError(f"cannot copy {final.name} from the Hugging Face cache: {exc.strerror}") from None
    os.replace(tmp, final)
    if remote.sha256 is not None:
        record_verified(dest_dir, final, remote.sha256)
    return True


# --- disk space ----------------------------------------------------------------------------------------------------


def check_space(dest_dir: Path, needed: int, what: str) -> None:
    if needed <= 0:
        return
    free = shutil.disk_usage(dest_dir).free
    if free < needed:
        raise DownloadError(f"not enough disk space for {what}: needs {human(needed)}, {human(free)} free on "
                            f"{dest_dir}. Free up {human(needed - free)} or choose another folder "
                            "(QWEN_CHAT_MODELS_DIR).")


# --- one file --------------------------------------------------------------------------------------------------------


def download_file(repo: str, remote: RemoteFile, commit: str, dest_dir: Path, *, token: str | None = None,
                  progress: Progress | None = None, cancel: Cancel = None, chunk: int = CHUNK) -> Path:
    """Download one hub file into `dest_dir` (resuming a partial), verify it, and return its final path."""
    final, partial, meta = download_paths(dest_dir, remote)  # rejects names that would escape dest_dir
    if hub.offline() and not final.is_file():
        raise HubError(hub.OFFLINE_MESSAGE)
    dest_dir.mkdir(parents=True, exist_ok=True)
    if _already_there(final, remote, dest_dir, cancel) or _from_hf_cache(repo, remote, commit, final, dest_dir,
                                                                         cancel):
        if progress:
            progress(remote.size, remote.size, final.name)
        return final

    done, digest = _resume_or_start(repo, remote, commit, partial, meta, cancel)
    check_space(dest_dir, remote.size - done, final.name)
    fetch = _Fetch(repo, remote, commit, partial, done, digest, token=token, progress=progress, cancel=cancel,
                   chunk=chunk, name=final.name)
    done, digest = fetch.run()
    _verify(remote, partial, meta, done, digest, final.name)
    os.replace(partial, final)
    with contextlib.suppress(OSError):
        meta.unlink()
    fsync_folder(dest_dir)
    if remote.sha256 is not None:
        record_verified(dest_dir, final, remote.sha256)
    return final


def _resume_or_start(repo: str, remote: RemoteFile, commit: str, partial: Path, meta: Path,
                     cancel: Cancel) -> tuple[int, Any]:
    """The bytes of the partial that can be kept, with their sha256; an empty partial and its sidecar if none."""
    done = resumable_bytes(repo, remote, commit, partial, meta)
    if done:
        return done, _hash_file(partial, cancel, limit=done)
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    meta.write_text(json.dumps(sidecar(repo, remote, commit)), encoding="utf-8")
    partial.touch()
    return 0, hashlib.sha256()


class _Fetch:
    """The bytes of one file into its partial, over as many requests as dropped connections and 5xx answers
    take. `done` and `digest` always describe the bytes on disk, so each retry resumes exactly there."""

    def __init__(self, repo: str, remote: RemoteFile, commit: str, partial: Path, done: int, digest: Any, *,
                 token: str | None, progress: Progress | None, cancel: Cancel, chunk: int, name: str) -> None:
        self.repo, self.remote, self.partial, self.name = repo, remote, partial, name
        self.done, self.digest = done, digest
        self.token, self.progress, self.cancel, self.chunk = token, progress, cancel, chunk
        self.url = hub.resolve_url(repo, remote.path, commit)
        self.session = hub.session()
        self.before = done  # `done` when the current request began
        self.stalls = 0  # requests in a row that brought no new bytes
        self.server_errors = 0

    def run(self) -> tuple[int, Any]:
        transport_errors = hub.transport_errors()
        while self.done < self.remote.size or self.remote.size == 0:
            if _cancelled(self.cancel):
                raise DownloadCancelled(f"download of {self.name} cancelled; the partial file is kept and the next "
                                        "pull resumes it")
            headers = {**hub.auth_headers(self.token), "Accept-Encoding": "identity"}
            if self.done:
                headers["Range"] = f"bytes={self.done}-"
            self.before = self.done
            try:
                answered = self._request(headers)
            except HubError as exc:
                self._wait_after_server_error(exc)
                continue
            except OfflineModeIsEnabled:
                raise HubError(hub.OFFLINE_MESSAGE) from None
            except transport_errors as exc:
                self._wait_after_drop(exc)
                continue
            except OSError as exc:  # writing the partial file
                raise _disk_error(exc, self.name, self.partial, self.done, self.remote.size) from None
            if answered:
                break  # the server finished its answer: verification decides whether it was right
        return self.done, self.digest

    def _request(self, headers: dict[str, str]) -> bool:
        """One GET from `done` on; True when the server has nothing more to send."""
        with self.session.stream("GET", self.url, headers=headers, timeout=hub.download_timeout()) as response:
            status = response.status_code
            if status == 416 and self.done:
                return True  # the server has no bytes past ours
            if status >= 400:
                raise hub.error_for_status(status, dict(response.headers), self.repo, self.remote.path,
                                           token=self.token)
            if self.done and (status != 206 or not _range_starts_at(response, self.done)):
                self.done, self.digest, self.before = 0, hashlib.sha256(), 0  # the range was ignored: start over
            self._save_body(response)
            clean_end = response.headers.get("content-length") is not None
        return clean_end or self.done >= self.remote.size or self.remote.size == 0

    def _save_body(self, response: Any) -> None:
        with self.partial.open("r+b", buffering=max(self.chunk, 64 * 1024)) as f:
            f.seek(self.done)
            f.truncate()
            try:
                for block in response.iter_bytes():  # as it arrives: a drop loses nothing
                    if _cancelled(self.cancel):
                        raise DownloadCancelled(f"download of {self.name} cancelled; the partial file is kept "
                                                "and the next pull resumes it")
                    _write(f, block)
                    self.digest.update(block)
                    self.done += len(block)
                    if self.progress:
                        self.progress(self.done, self.remote.size, self.name)
                    if self.done > self.remote.size:
                        break
            finally:
                flush_partial(f, self.done)

    def _wait_after_server_error(self, exc: HubError) -> None:
        if not exc.retryable or self.server_errors >= SERVER_ERROR_RETRIES:
            raise exc
        self.server_errors += 1
        time.sleep(RETRY_DELAYS[min(self.server_errors, len(RETRY_DELAYS)) - 1])

    def _wait_after_drop(self, exc: BaseException) -> None:
        self.stalls = self.stalls + 1 if self.done == self.before else 1
        if self.stalls > len(RETRY_DELAYS):
            raise DownloadError(f"the connection to the hub kept dropping while downloading {self.name} ({exc}); "
                                f"{human(self.done)} of {human(self.remote.size)} are kept: run the pull again to "
                                "resume.") from None
        time.sleep(RETRY_DELAYS[self.stalls - 1])


def _range_starts_at(response: Any, start: int) -> bool:
    value = response.headers.get("content-range", "")
    return value.startswith(f"bytes {start}-")


def _disk_error(exc: OSError, name: str, partial: Path, done: int, size: int) -> DownloadError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DownloadError(f"the disk is full while downloading {name}: {human(done)} of {human(size)} are kept "
                             f"in {partial}; free up {human(size - done)} on {partial.parent} and run the pull "
                             "again to resume.")
    return DownloadError(f"cannot write {partial}: {exc.strerror or exc}. {human(done)} of {human(size)} are kept; "
                         "fix the folder and run the pull again to resume.")


def _verify(remote: RemoteFile, partial: Path, meta: Path, done: int, digest: Any, name: str) -> None:
    problem = None
    try:
        check_magic(partial)
    except ModelFileError as exc:
        problem = str(exc).replace(partial.name, name)
        if "Git LFS pointer" in problem:
            problem = (f"the hub sent a Git LFS pointer for {name} instead of the model file (the repo or mirror "
                       "does not serve LFS content)")
    if problem is None and done != remote.size:
        problem = f"{name} has {done:,} bytes but the hub lists {remote.size:,}"
    if problem is None and remote.sha256 is not None and digest.hexdigest() != remote.sha256:
        problem = f"{name} is corrupt: its sha256 {digest.hexdigest()} does not match the hub's {remote.sha256}"
    if problem is None:
        return
    for path in (partial, meta):
        with contextlib.suppress(OSError):
            path.unlink()
    raise DownloadError(f"{problem}. The bad download was deleted; run the pull again.")
