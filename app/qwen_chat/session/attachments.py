"""Files attached to a message (/file PATH): read once, checked, and shown to the model as fenced blocks."""

from __future__ import annotations

import math
from pathlib import Path

from qwen_chat.store.records import Attachment

MAX_BYTES = 512 * 1024  # a file far larger would not fit any local context alongside a conversation
CHARS_PER_TOKEN = 3.6  # a cautious estimate for code and prose (no tokenizer outside the engine thread)


class AttachmentError(Exception):
    """Why a file cannot be attached, worded for the user."""


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def read_attachment(path: Path) -> Attachment:
    """The file's text, or AttachmentError saying what is wrong: missing, a folder, unreadable, too big, binary."""
    path = path.expanduser()
    try:
        if path.is_dir():
            raise AttachmentError(f"{path} is a folder; attach the files in it one by one")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise AttachmentError(f"{path.name} is {size / 1024:,.0f} KB; files up to {MAX_BYTES // 1024} KB can "
                                  "be attached (paste the part that matters instead)")
        data = path.read_bytes()
    except FileNotFoundError:
        raise AttachmentError(f"there is no file {path}") from None
    except PermissionError:
        raise AttachmentError(f"{path} cannot be read (permission denied)") from None
    except OSError as exc:
        raise AttachmentError(f"{path} cannot be read: {exc.strerror or exc}") from None
    if b"\0" in data[:8192]:
        raise AttachmentError(f"{path.name} is a binary file; text files (code, Markdown, logs) can be attached")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AttachmentError(f"{path.name} is not UTF-8 text; text files (code, Markdown, logs) can be "
                              "attached") from None
    return Attachment(path.name, text, estimate_tokens(text))


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
