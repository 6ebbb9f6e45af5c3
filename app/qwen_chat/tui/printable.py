"""Model and user text made safe to draw: terminal control characters become visible symbols."""

from __future__ import annotations

# C0 controls (but newline and tab), DEL and C1 controls would reach the terminal raw (ESC starts a
# sequence, SO switches the character set): show them as Unicode control pictures instead.
_CONTROLS = {c: 0x2400 + c for c in range(0x20) if c not in (0x09, 0x0A)}
_CONTROLS[0x7F] = 0x2421
_CONTROLS.update({c: 0xFFFD for c in range(0x80, 0xA0)})


def printable(text: str) -> str:
    return text.translate(_CONTROLS)
