"""settings.toml [engine]: how the local engine (llama.cpp) runs on this machine.

    [engine]
    threads = 4     # llama.cpp's threads, for decoding and for prompts; left out = the physical cores
    speculative = false  # no speculative decoding (drafts checked in batches; faster on repeated text); default true

`--threads N` wins over the file: the command line puts it in QWEN_CHAT_THREADS (as --db does QWEN_CHAT_DB), so
every load of the run (the first, F3, /context) and every report sees it. A bad value is reported with its key
and the default is used. F5 writes `speculative` (save_speculative) and the session uses it from the next answer;
a draft model still loads only when it was true at the load.

Why the physical cores: llama.cpp's decoding reads the weights from memory, and its matrix kernels gain nothing
from a core's second hardware thread; more threads than free cores make every token wait for the slowest one
(0.7 tok/s was seen with a core held by another process). Fewer threads leave cores to other programs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from qwen_chat.config.settings import interpreted, section, settings_path, update_document

THREADS_ENV = "QWEN_CHAT_THREADS"
MAX_THREADS = 1024


@dataclass(frozen=True)
class EngineSettings:
    threads: int | None = None  # None: the physical cores
    speculative: bool = True  # draft tokens from the context and verify them in batches (engines/drafting.py)


@dataclass(frozen=True)
class Threads:
    """llama.cpp's thread count for a load, and where it came from (shown by `plan` and `doctor`)."""

    count: int
    source: str

    def describe(self) -> str:
        return f"{self.count} ({self.source})"


def load_engine_settings(problems: list[str] | None = None) -> EngineSettings:
    return interpreted("engine", _engine, problems)


def _engine(document: dict[str, Any], problems: list[str]) -> EngineSettings:
    table = document.get("engine") or {}
    if not isinstance(table, dict):
        problems.append(f"{settings_path()}: engine: must be a table ([engine]); the defaults are used")
        return EngineSettings()
    threads, speculative = None, True
    for key, value in table.items():
        if key == "speculative":
            if isinstance(value, bool):
                speculative = value
            else:
                problems.append(f"{settings_path()}: engine.speculative: must be true or false (got {value!r}); "
                                "true is used")
        elif key != "threads":
            problems.append(f"{settings_path()}: engine.{key}: unknown setting (known: threads, speculative); "
                            "ignored")
        elif threads_problem(value):
            problems.append(f"{settings_path()}: engine.threads: {threads_problem(value)}; the physical cores "
                            "are used")
        else:
            threads = value
    return EngineSettings(threads, speculative)


def save_speculative(on: bool) -> None:
    """Write `[engine] speculative`, keeping the file's comments and other keys (update_document edits the text).
    Raises OSError (SettingsError for a file that does not parse) when it cannot be written."""
    update_document(lambda document: section(document, "engine").__setitem__("speculative", on))


def threads_problem(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_THREADS:
        return f"must be a whole number of threads from 1 to {MAX_THREADS} (got {value!r})"
    return None


def chosen_threads(problems: list[str] | None = None) -> Threads | None:
    """The thread count the user chose (--threads, else [engine] threads), or None: the physical cores. Speed
    estimates (planning.calibration.rates_for) take it, so `plan`, `models` and F3 predict what loads will do."""
    given = os.environ.get(THREADS_ENV, "").strip()
    if given.isdigit() and not threads_problem(int(given)):
        return Threads(int(given), "--threads")
    setting = load_engine_settings(problems).threads
    return None if setting is None else Threads(setting, "settings.toml [engine] threads")


def estimate_threads() -> int | None:
    """The thread count speed estimates assume: the user's choice, or None (rates_for takes the physical cores of
    the machine it is given)."""
    chosen = chosen_threads()
    return chosen.count if chosen is not None else None


def threads(problems: list[str] | None = None) -> Threads:
    """The thread count loads use: --threads, else [engine] threads, else the physical cores (the logical ones
    where the system does not tell them apart)."""
    chosen = chosen_threads(problems)
    if chosen is not None:
        return chosen
    import psutil

    physical = psutil.cpu_count(logical=False)
    if physical:
        return Threads(physical, "the physical cores")
    return Threads(psutil.cpu_count() or 1, "the logical cores; the physical count is unknown here")
