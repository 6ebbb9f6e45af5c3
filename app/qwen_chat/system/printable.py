"""Text from models, users, files and catalogs made safe to show on a terminal: control characters become
visible symbols. The TUI (tui/printable.py) and the command line both use this one implementation."""

from __future__ import annotations

# C0 controls (but newline and tab), DEL and C1 controls would reach the terminal raw (ESC starts a
# sequence, SO switches the character set, CSI 0x9B is ESC [ on some terminals): show them as Unicode
# control pictures (or U+FFFD for C1, which has no pictures) instead.
_CONTROLS = {c: 0x2400 + c for c in range(0x20) if c not in (0x09, 0x0A)}
_CONTROLS[0x7F] = 0x2421
_CONTROLS.update({c: 0xFFFD for c in range(0x80, 0xA0)})


def printable(text: str) -> str:
    """`text` with every terminal control character made visible; newlines and tabs are kept."""
    return text.translate(_CONTROLS)


def printable_line(text: str) -> str:
    """`text` as one printable line (a title, a file name): newlines and tabs become spaces too."""
    return printable(text.replace("\r\n", " ").replace("\n", " ").replace("\t", " "))
