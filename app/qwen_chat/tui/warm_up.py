"""The first answer's first frames, paid for before the user asks.

The first code block drawn loads its Pygments lexer and compiles its rules (about 20 ms for Python here), the
first Markdown parse builds markdown-it's rule chains, and Rich its syntax theme: together the longest frame of
an answer (40-60 ms) was its first one. A thread renders a sample of each shape once at start, into a throwaway
console, while the user is still reading the screen; what it fills are process-wide caches.
"""

from __future__ import annotations

import io
import threading

from rich.console import Console

from qwen_chat.tui.streaming_markdown import ChatMarkdown

# the languages local models write most; any other loads its lexer on first use (2-10 ms each)
LANGUAGES = ("python", "bash", "json", "javascript", "typescript", "rust", "cpp", "go", "sql", "yaml")
SAMPLE = ("# A heading\n\nSome *text* with `code` and a [link](https://example.org).\n\n1. one\n2. two\n\n"
          "- a\n- b\n\n> a quote\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
          + "".join(f"```{language}\nx = 1\n```\n\n" for language in LANGUAGES))


def warm_rendering() -> None:
    console = Console(file=io.StringIO(), width=100, color_system="truecolor")
    for theme in ("monokai", "friendly"):  # the dark and the light code themes
        console.print(ChatMarkdown(SAMPLE, code_theme=theme, hyperlinks=True))


def start() -> threading.Thread:
    thread = threading.Thread(target=warm_rendering, name="warm-up", daemon=True)
    thread.start()
    return thread
