"""Where stdio MCP servers' stderr goes: a log file, each line labelled with its server, and never our terminal.

The SDK's default `errlog` is sys.stderr, whose bytes would land in the middle of the TUI's screen. Each server
gets a pipe instead; a reader thread copies its lines into the shared log and keeps the last few, so that a
server that dies at start can be reported with what it said (`exited with code 1: ModuleNotFoundError: ...`).
"""

from __future__ import annotations

import collections
import os
import threading
import time
from pathlib import Path
from typing import TextIO


class StderrLog:
    """The shared log file (opened on first use; if it cannot be opened the lines are only kept in memory)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        self._failed = False

    def write(self, server: str, line: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with self._lock:
            handle = self._open()
            if handle is not None:
                try:
                    handle.write(f"{stamp} {server}: {line}\n")
                    handle.flush()
                except (OSError, ValueError):  # disk full, or closed by close() meanwhile: the line is dropped
                    pass

    def _open(self) -> TextIO | None:
        if self._file is None and not self._failed:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115 (kept open)
            except OSError:
                self._failed = True
        return self._file

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class StderrPipe:
    """One server's stderr. `writer` is what the process is given; after the spawn `spawned()` closes our copy
    of it, so that the reader sees the end of the pipe when the server (and whatever it started) is gone."""

    def __init__(self, server: str, log: StderrLog, keep: int = 5) -> None:
        self.server = server
        self._log = log
        self._last: collections.deque[str] = collections.deque(maxlen=keep)
        self._ended = threading.Event()
        read_fd, write_fd = os.pipe()
        self.writer: TextIO = os.fdopen(write_fd, "w")
        self._reader = threading.Thread(target=self._copy, args=(read_fd,), name=f"mcp-stderr-{server}",
                                        daemon=True)
        self._reader.start()

    def spawned(self) -> None:
        if not self.writer.closed:
            self.writer.close()

    def last_line(self) -> str | None:
        return self._last[-1] if self._last else None

    def ended(self) -> bool:
        """Whether every process holding the pipe has closed it (and all it wrote is read)."""
        return self._ended.is_set()

    def _copy(self, read_fd: int) -> None:
        try:
            with os.fdopen(read_fd, "rb") as pipe:
                for raw in pipe:
                    line = raw.decode("utf-8", errors="replace").rstrip()
                    if line:
                        self._last.append(line)
                        self._log.write(self.server, line)
        except (OSError, ValueError):
            pass
        finally:
            self._ended.set()
