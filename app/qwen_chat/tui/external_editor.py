"""Ctrl+G: edit the draft in the user's own editor ($VISUAL, else $EDITOR, else vi), as git and shells do."""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from textual.app import SuspendNotSupported


class EditorError(Exception):
    pass


def editor_command() -> list[str]:
    command = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    return shlex.split(command)


def edit_in_editor(draft: str, suspend: Callable[[], AbstractContextManager[None]]) -> str:
    """The text as the editor saved it (without the final newline editors add). `suspend` hands the terminal
    to the editor; where the app cannot step aside (no terminal, as under tests) the editor runs anyway."""
    with tempfile.TemporaryDirectory(prefix="qwen-chat-") as folder:
        path = Path(folder) / "prompt.md"
        path.write_text(draft, encoding="utf-8")
        command = [*editor_command(), str(path)]
        try:
            with _stepped_aside(suspend):
                result = subprocess.run(command, check=False)
        except OSError as exc:
            raise EditorError(f"Could not start the editor {command[0]!r} ({exc}); set $VISUAL or $EDITOR.") \
                from exc
        if result.returncode != 0:
            raise EditorError(f"The editor {command[0]!r} exited with {result.returncode}; the draft is unchanged.")
        text = path.read_text(encoding="utf-8", errors="replace")
    return text[:-1] if text.endswith("\n") and not draft.endswith("\n") else text


@contextlib.contextmanager
def _stepped_aside(suspend: Callable[[], AbstractContextManager[None]]) -> Iterator[None]:
    try:
        context = suspend()
        context.__enter__()
    except SuspendNotSupported:
        yield
        return
    try:
        yield
    finally:
        context.__exit__(None, None, None)
