"""A loopback Hugging Face hub for tests: enough of the API for the real huggingface_hub client and our downloader.

Repos are defined in Python (repo id -> commit -> {path: bytes}); faults can be injected per file (drop the
connection after N bytes, slow chunks, fixed status codes, wrong bytes, an LFS pointer). Every request is recorded
with the byte range served, so tests can check what was fetched again after a resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

ERROR_CODES = {404: "EntryNotFound", 401: "GatedRepo", 403: "GatedRepo"}
LISTING = ":listing"  # the path Hub.fault_listing files a repo's API faults under
INVALID_TOKEN = "Invalid credentials in Authorization header"  # huggingface.co's words for a token it does not know


@dataclass
class Fault:
    status: int | None = None  # answer GET/HEAD of the file with this status
    drop_after: int | None = None  # close the connection after this many body bytes of one response
    times: int | None = None  # how many requests the fault applies to; None = every request
    delay: float = 0.0  # seconds to sleep before each chunk
    chunk_size: int = 64 * 1024
    wrong_bytes: bool = False  # serve different bytes of the same length
    lfs_pointer: bool = False  # serve the Git LFS pointer text instead of the content
    used: int = 0


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]]  # in order; the last one is `main`
    gated: bool = False
    token: str | None = None  # the token that has accepted the license

    @property
    def main(self) -> str:
        return list(self.commits)[-1]


@dataclass
class Served:
    method: str
    path: str  # URL path, decoded
    status: int
    range_start: int | None = None  # first byte offset of the body served, for file downloads
    bytes_sent: int = 0
    headers: dict[str, str] = field(default_factory=dict)


def lfs_pointer(content: bytes) -> bytes:
    oid = hashlib.sha256(content).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(content)}\n".encode()


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\x00" % len(content) + content).hexdigest()


def is_lfs(path: str) -> bool:
    return path.endswith(".gguf")


class Hub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.faults: dict[tuple[str, str], Fault] = {}
        self.served: list[Served] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        # The tokens that exist: a request bearing any other is answered 401 on every route, as huggingface.co
        # answers a mistyped or expired token. None: every token exists (a gated repo then answers 403).
        self.tokens: set[str] | None = None
        self.fail_all: int | None = None  # answer every request with this status (a hub that is down)

    # --- setup ---------------------------------------------------------------------------------------------------

    def add_repo(self, repo_id: str, files: dict[str, bytes], *, commit: str | None = None, gated: bool = False,
                 token: str | None = None) -> str:
        """Add (or add a commit to) a repo; returns the commit sha, which becomes `main`."""
        repo = self.repos.setdefault(repo_id, Repo({}, gated, token))
        repo.gated, repo.token = gated or repo.gated, token or repo.token
        sha = commit or hashlib.sha1(repr((repo_id, len(repo.commits), sorted(files))).encode()).hexdigest()
        repo.commits[sha] = dict(files)
        return sha

    def fault(self, repo_id: str, path: str, **kw: object) -> Fault:
        fault = Fault(**kw)  # type: ignore[arg-type]
        self.faults[(repo_id, path)] = fault
        return fault

    def fault_listing(self, repo_id: str, **kw: object) -> Fault:
        """A fault on the repo's API routes (the file listing); `status` and `times` apply."""
        return self.fault(repo_id, LISTING, **kw)

    def clear_faults(self) -> None:
        self.faults.clear()

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Hub:
        hub = self

        class Handler(_Handler):
            owner = hub

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    # --- what was served -----------------------------------------------------------------------------------------

    def record(self, entry: Served) -> None:
        with self.lock:
            self.served.append(entry)

    def reset_counts(self) -> None:
        with self.lock:
            self.served.clear()

    def downloads(self, path: str | None = None) -> list[Served]:
        """GET requests of file contents (resolve URLs), optionally of one file name."""
        with self.lock:
            return [s for s in self.served if s.method == "GET" and "/resolve/" in s.path
                    and (path is None or s.path.endswith("/" + path))]

    def bytes_served(self, path: str | None = None) -> int:
        return sum(s.bytes_sent for s in self.downloads(path))

    def requests(self) -> list[Served]:
        with self.lock:
            return list(self.served)


class _Handler(BaseHTTPRequestHandler):
    owner: Hub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    # --- plumbing ------------------------------------------------------------------------------------------------

    def _send_json(self, status: int, data: object, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(data).encode()
        self.owner.record(Served(self.command, unquote(urlsplit(self.path).path), status))  # before the client sees it
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send_json(status, {"error": message}, headers)

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.owner.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if repo.gated:
            auth = self.headers.get("Authorization", "")
            if not auth:
                self._error(401, "GatedRepo", "Access to this model is restricted: you must be authenticated")
                return None
            if auth != f"Bearer {repo.token}":
                self._error(403, "GatedRepo", "Access to this model is restricted: accept the conditions")
                return None
        return repo

    def _commit(self, repo: Repo, rev: str) -> str | None:
        rev = unquote(rev)
        sha = repo.main if rev == "main" else rev
        if sha not in repo.commits:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return None
        return sha

    # --- routes ---------------------------------------------------------------------------------------------------

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib naming
        self._route()

    def do_GET(self) -> None:  # noqa: N802
        self._route()

    def _route(self) -> None:
        if self.owner.fail_all is not None:
            self._error(self.owner.fail_all, None, f"injected {self.owner.fail_all}")
            return
        auth = self.headers.get("Authorization", "")
        if auth and self.owner.tokens is not None and auth.removeprefix("Bearer ") not in self.owner.tokens:
            self._error(401, None, INVALID_TOKEN)
            return
        parts = urlsplit(self.path)
        path = parts.path
        query = parse_qs(parts.query)
        if path == "/api/agent-harnesses":
            self._error(404, None, "not here")
            return
        if path.startswith("/api/models/"):
            self._api(path[len("/api/models/"):], query)
            return
        segments = path.lstrip("/").split("/", 4)
        if len(segments) == 5 and segments[2] == "resolve":
            self._resolve(f"{unquote(segments[0])}/{unquote(segments[1])}", segments[3], unquote(segments[4]))
            return
        self._error(404, None, "no such route")

    def _api(self, rest: str, query: dict[str, list[str]]) -> None:
        segments = rest.split("/")
        if len(segments) < 2:
            self._error(404, "RepoNotFound", "Repository not found")
            return
        repo_id = f"{unquote(segments[0])}/{unquote(segments[1])}"
        tail = segments[2:]
        fault = self.owner.faults.get((repo_id, LISTING))
        if fault is not None and fault.status is not None and (fault.times is None or fault.used < fault.times):
            fault.used += 1
            self._error(fault.status, None, f"injected {fault.status}")
            return
        repo = self._repo(repo_id)
        if repo is None:
            return
        if not tail or tail[0] == "revision":
            sha = self._commit(repo, "/".join(tail[1:]) if tail else "main")
            if sha is not None:
                self._model_info(repo_id, repo, sha, blobs=query.get("blobs") == ["true"])
            return
        if tail[0] == "tree" and len(tail) >= 2:
            sha = self._commit(repo, tail[1])
            if sha is not None:
                self._tree(repo, sha, unquote("/".join(tail[2:])))
            return
        self._error(404, None, "no such route")

    def _model_info(self, repo_id: str, repo: Repo, sha: str, blobs: bool) -> None:
        siblings = []
        for name, content in repo.commits[sha].items():
            entry: dict[str, object] = {"rfilename": name}
            if blobs:
                entry["size"] = len(content)
                entry["blobId"] = git_blob_id(lfs_pointer(content) if is_lfs(name) else content)
                if is_lfs(name):
                    entry["lfs"] = {"size": len(content), "sha256": hashlib.sha256(content).hexdigest(),
                                    "pointerSize": len(lfs_pointer(content))}
            siblings.append(entry)
        self._send_json(200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": False,
                              "gated": "manual" if repo.gated else False, "disabled": False, "tags": ["gguf"],
                              "siblings": siblings})

    def _tree(self, repo: Repo, sha: str, prefix: str) -> None:
        entries = []
        dirs: set[str] = set()
        for name, content in repo.commits[sha].items():
            if prefix and not name.startswith(prefix.rstrip("/") + "/"):
                continue
            *folders, _ = name.split("/")
            for i in range(1, len(folders) + 1):
                dirs.add("/".join(folders[:i]))
            entry: dict[str, object] = {"type": "file", "path": name, "size": len(content),
                                        "oid": git_blob_id(content)}
            if is_lfs(name):
                entry["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content),
                                "pointerSize": len(lfs_pointer(content))}
            entries.append(entry)
        entries += [{"type": "directory", "path": d, "oid": git_blob_id(d.encode())} for d in sorted(dirs)]
        self._send_json(200, entries)

    def _resolve(self, repo_id: str, rev: str, file_path: str) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        sha = self._commit(repo, rev)
        if sha is None:
            return
        content = repo.commits[sha].get(file_path)
        if content is None:
            self._error(404, "EntryNotFound", f"{file_path} does not exist on {rev}")
            return
        fault = self.owner.faults.get((repo_id, file_path))
        active = fault is not None and (fault.times is None or fault.used < fault.times)
        if active and self.command == "GET":
            fault.used += 1  # type: ignore[union-attr]
        if active and fault.status is not None:  # type: ignore[union-attr]
            status = fault.status  # type: ignore[union-attr]
            self._error(status, ERROR_CODES.get(status), f"injected {status}")
            return
        etag = hashlib.sha256(content).hexdigest() if is_lfs(file_path) else git_blob_id(content)
        if active and fault.lfs_pointer:  # type: ignore[union-attr]
            content = lfs_pointer(content)
        elif active and fault.wrong_bytes:  # type: ignore[union-attr]
            content = content[:4] + bytes(b ^ 0x5A for b in content[4:])  # GGUF magic kept, hash wrong
        size = len(content)
        start, end = 0, size - 1
        status = 200
        spec = self.headers.get("Range")
        if spec:
            start, end, ok = _parse_range(spec, size)
            if not ok:
                self.owner.record(Served(self.command, unquote(urlsplit(self.path).path), 416, start))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{etag}"')
        self.send_header("X-Repo-Commit", sha)
        if is_lfs(file_path):
            self.send_header("X-Linked-Etag", f'"{etag}"')
            self.send_header("X-Linked-Size", str(size))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        entry = Served(self.command, unquote(urlsplit(self.path).path), status, start,
                       headers={k: v for k, v in self.headers.items()})
        self.owner.record(entry)  # counted before the client can see anything, so tests never race the server
        self.end_headers()
        if self.command == "HEAD":
            return
        self._stream(content[start:end + 1], entry, fault if active else None)

    def _stream(self, body: bytes, entry: Served, fault: Fault | None) -> None:
        step = fault.chunk_size if fault else 256 * 1024
        limit = fault.drop_after if fault and fault.drop_after is not None else None
        try:
            for offset in range(0, len(body), step):
                if fault and fault.delay:
                    time.sleep(fault.delay)
                piece = body[offset:offset + step]
                if limit is not None and entry.bytes_sent + len(piece) > limit:
                    piece = piece[:limit - entry.bytes_sent]
                    entry.bytes_sent += len(piece)
                    self.wfile.write(piece)
                    self.wfile.flush()
                    self._drop()
                    return
                entry.bytes_sent += len(piece)
                self.wfile.write(piece)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def _parse_range(spec: str, size: int) -> tuple[int, int, bool]:
    try:
        unit, _, value = spec.partition("=")
        first, _, last = value.split(",")[0].strip().partition("-")
        if unit.strip() != "bytes":
            return 0, size - 1, False
        if first == "":  # suffix range: the last N bytes
            count = int(last)
            return max(0, size - count), size - 1, count > 0
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    except ValueError:
        return 0, size - 1, False
    return start, end, start < size and start <= end


def hub_env(monkeypatch: pytest.MonkeyPatch, url: str, home: Path) -> None:
    """Point huggingface_hub at the loopback hub; it reads some variables at import, so patch its constants too."""
    from huggingface_hub import constants

    cache = home / "hub"
    for name, value in {"HF_ENDPOINT": url, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1",
                        "HF_HOME": str(home), "HF_HUB_CACHE": str(cache),
                        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))


def resolve_path(repo_id: str, rev: str, path: str) -> str:
    return f"/{repo_id}/resolve/{quote(rev, safe='')}/{path}"
