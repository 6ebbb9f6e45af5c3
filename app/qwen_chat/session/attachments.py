"""Files attached to a message (/file PATH): read once, checked, and shown to the model as fenced blocks."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

from qwen_chat.store.records import Attachment

MAX_BYTES = 512 * 1024  # a file far larger would not fit any local context alongside a conversation
CHARS_PER_TOKEN = 3.6  # a cautious estimate for code and prose (no tokenizer outside the engine thread)


class AttachmentError(Exception):
    """Why a file cannot be attached, worded for the user."""


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def read_attachment(path: Path) -> Attachment:
    """The file's text, or AttachmentError saying what is wrong: missing, a folder, not a regular file (a device,
    a FIFO, a socket), unreadable, too big, binary. Never blocks on a FIFO or reads more than MAX_BYTES + 1."""
    path = path.expanduser()
    data = _read_regular_file(path)
    if b"\0" in data[:8192]:
        raise AttachmentError(f"{path.name} is a binary file; text files (code, Markdown, logs) can be attached")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AttachmentError(f"{path.name} is not UTF-8 text; text files (code, Markdown, logs) can be "
                              "attached") from None
    return Attachment(path.name, text, estimate_tokens(text))


# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer (forever, in the app); O_NOCTTY: a
# terminal device opened here never becomes the controlling one. Absent flags (not POSIX) are simply not asked for.
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
_CHUNK = 64 * 1024


def _read_regular_file(path: Path) -> bytes:
    """At most MAX_BYTES of a regular file (a symlink to one is fine); AttachmentError for anything else."""
    try:
        # checked before opening too, since opening some devices acts on them (a tape drive rewinds)
        _refuse_unless_regular(path, os.stat(path))
        fd = os.open(path, _OPEN_FLAGS)
        try:
            # the descriptor is what is read: were the path swapped since the stat, this still sees the truth
            info = os.fstat(fd)
            _refuse_unless_regular(path, info)
            if info.st_size > MAX_BYTES:
                raise _too_big(path, info.st_size)
            data = _read_at_most(fd, MAX_BYTES + 1)  # st_size can lie (0 for /proc files; a file still growing)
            if len(data) > MAX_BYTES:
                grown = os.fstat(fd).st_size
                raise _too_big(path, grown if grown > MAX_BYTES else None)
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise AttachmentError(f"there is no file {path}") from None
    except PermissionError:
        raise AttachmentError(f"{path} cannot be read (permission denied)") from None
    except OSError as exc:
        raise AttachmentError(f"{path} cannot be read: {exc.strerror or exc}") from None
    return data


def _refuse_unless_regular(path: Path, info: os.stat_result) -> None:
    mode = info.st_mode
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise AttachmentError(f"{path} is a folder; attach the files in it one by one")
    kind = ("a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a named pipe (FIFO)" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a special file")
    raise AttachmentError(f"{path} is {kind}, not a file; only regular text files can be attached")


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _too_big(path: Path, size: int | None) -> AttachmentError:
    """`size`: from fstat; None where fstat said less than was read (0 for /proc files)."""
    how_big = f"{size / 1024:,.0f} KB" if size is not None else f"over {MAX_BYTES // 1024} KB"
    return AttachmentError(f"{path.name} is {how_big}; files up to {MAX_BYTES // 1024} KB can be attached (paste "
                           "the part that matters instead)")


def with_files(text: str, files: tuple[Attachment, ...]) -> str:
    """The user's message as the model reads it: the text, then each file in a fence long enough for its own."""
    blocks = [text] if text.strip() else []
    for file in files:
        longest = max((len(run) for run in _backtick_runs(file.content)), default=0)
        fence = "`" * max(3, longest + 1)
        blocks.append(f"{file.name}:\n{fence}\n{file.content.rstrip(chr(10))}\n{fence}")
    return "\n\n".join(blocks)


def _backtick_runs(text: str) -> list[str]:
    runs, current = [], ""
    for character in text:
        if character == "`":
            current += "`"
        elif current:
            runs.append(current)
            current = ""
    return runs + ([current] if current else [])
