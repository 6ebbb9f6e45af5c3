"""What the command line prints. Titles, snippets, file, model and GPU names come from conversations, files,
catalogs and drivers, so they may hold terminal escape sequences: every line a person reads goes through
system/printable.py first (the TUI shows text the same way). Data meant for other programs (an export, a
path on stdout) is passed on exact when stdout is not a terminal.
"""

from __future__ import annotations

import sys

from qwen_chat.system.printable import printable, printable_line


def error(message: object) -> None:
    """One `qwen-chat: ...` line on stderr."""
    print(f"qwen-chat: {printable(str(message))}", file=sys.stderr)


def note(message: object) -> None:
    """A message for the person at the terminal, on stderr."""
    print(printable(str(message)), file=sys.stderr)


def show(line: str) -> None:
    """A line of a report on stdout (always made printable: it is for reading)."""
    print(printable(line))


def data(text: str) -> None:
    """Text for a program or a file on stdout: exact, unless a terminal would interpret it."""
    sys.stdout.write(printable(text) if is_terminal(sys.stdout) else text)


def one_line(text: str) -> str:
    """A title or a name, safe to put in a table row."""
    return printable_line(text)


def is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)  # None, or a stand-in without it: not a terminal
    try:
        return callable(isatty) and bool(isatty())
    except ValueError:  # a closed stream
        return False
