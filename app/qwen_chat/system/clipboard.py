"""Copying answers: the fenced code blocks of a Markdown text, and the platform's own clipboard tool.

The app also copies through the terminal (Textual's OSC 52), which works over SSH in most terminals but not
in all (tmux without `set-clipboard`, some Linux consoles); the system tool covers the local case.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TIMEOUT = 2.0  # seconds: a clipboard tool that hangs (no display, a stuck Wayland socket) must not hang the app

# An opening fence: three or more ` or ~ (not mixed), then the info string. Backtick fences cannot have a
# backtick in the info string (CommonMark): "```x```" on one line is inline code, not a block.
_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass(frozen=True)
class CodeBlock:
    language: str  # the first word of the info string ("python"), "" when the fence has none
    code: str  # the lines between the fences, without the final newline


def code_blocks(markdown: str) -> list[CodeBlock]:
    """The fenced code blocks, in order; a block left open at the end runs to the end (a cut-off answer).

    Fences may be indented (models put code blocks inside list items); the content loses as much of its
    indentation as the opening fence had, as CommonMark does.
    """
    blocks: list[CodeBlock] = []
    # not splitlines(): it also splits at form feeds and other separators that code may contain
    lines = re.split(r"\r\n|\r|\n", markdown)
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start an empty one
    i = 0
    while i < len(lines):
        opening = _OPEN.match(lines[i])
        i += 1
        if opening is None:
            continue
        fence, info = opening["fence"], opening["info"]
        if fence[0] == "`" and "`" in info:
            continue
        indent = len(opening["indent"])
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body: list[str] = []
        while i < len(lines) and not closing.match(lines[i]):
            body.append(_dedent(lines[i], indent))
            i += 1
        i += 1  # past the closing fence (or the end)
        words = info.split()
        blocks.append(CodeBlock(words[0] if words else "", "\n".join(body)))
    return blocks


def _dedent(line: str, width: int) -> str:
    """Remove up to `width` leading blanks, never any text (a less indented line keeps all its text)."""
    blanks = len(line) - len(line.lstrip(" \t"))
    return line[min(width, blanks):]


def _candidates() -> list[tuple[str, list[str], str]]:
    """(name, command, encoding) of each clipboard tool worth trying here, best first."""
    if sys.platform == "darwin":
        return [("pbcopy", ["pbcopy"], "utf-8")]
    # clip.exe reads UTF-16 with a byte order mark correctly; UTF-8 would come out as mojibake
    clip = [("clip.exe", ["clip.exe"], "utf-16")]
    if sys.platform == "win32":
        return clip
    found: list[tuple[str, list[str], str]] = []
    if _in_wsl():
        found += clip
    if os.environ.get("WAYLAND_DISPLAY"):
        found.append(("wl-copy", ["wl-copy"], "utf-8"))
    if os.environ.get("DISPLAY"):  # also under Wayland: XWayland sets DISPLAY too
        found += [("xclip", ["xclip", "-selection", "clipboard"], "utf-8"),
                  ("xsel", ["xsel", "--clipboard", "--input"], "utf-8")]
    return found


def _in_wsl() -> bool:
    if os.environ.get("WSL_DISTRO_NAME"):
        return True
    try:
        return "microsoft" in Path("/proc/version").read_text(errors="replace").lower()
    except OSError:
        return False


def system_copy(text: str) -> str | None:
    """Put text on the system clipboard with the platform's tool; the tool's name, or None if none worked.

    Never raises: copying is a convenience and the terminal path (OSC 52) is tried as well.
    """
    for name, command, encoding in _candidates():
        path = shutil.which(command[0])
        if path is None:
            continue
        env = dict(os.environ)
        if name == "pbcopy":
            env.setdefault("LC_CTYPE", "UTF-8")  # without a UTF-8 locale pbcopy mangles non-ASCII text
        try:
            # stdout/stderr to /dev/null: xclip and wl-copy fork a process that keeps serving the selection,
            # and captured pipes would stay open until it exits, so run() would wait for the timeout
            result = subprocess.run([path, *command[1:]], input=text.encode(encoding),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                    timeout=TIMEOUT, check=False)
        except (OSError, subprocess.SubprocessError, UnicodeError, ValueError):
            continue
        if result.returncode == 0:
            return name
    return None
