"""Model and user text made safe to draw: terminal control characters become visible symbols.

The implementation lives in system/printable.py, so the command line shows text exactly as the app does."""

from __future__ import annotations

from qwen_chat.system.printable import printable, printable_line

__all__ = ["printable", "printable_line"]
