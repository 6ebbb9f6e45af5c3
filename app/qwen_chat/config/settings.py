"""The settings file: one `settings.toml` in the config folder (`QWEN_CHAT_CONFIG_DIR` overrides) holds everything.

    theme = "qwen-dark"

    [endpoints.lab]                      # saved OpenAI-compatible servers (`--endpoint lab`)
    url = "http://gpu-box:8000/v1"
    model = "Qwen/Qwen3-235B-A22B"      # optional

    [keys]                               # binding id = key(s), commas between alternatives (keymap.py)
    toggle-thinking = "ctrl+t,f10"

    [chat]                               # defaults for new conversations
    thinking_budget = 0                  # tokens of thinking per answer; 0 = no limit
    context = "auto"                     # auto, native, 64k, 128k or 256k
    persona = ""                         # a persona name; "" = none
    seed = 42                            # every answer's sampling seed, 0 to 2**32-1; left out = random

    [presets.my-precise]                 # a named sampling preset (presets.py reads these three sections)
    base = "hybrid-thinking"
    temperature = 0.3

    [overrides.hybrid-thinking]          # the user's edits of Qwen's own preset
    top_k = 40

    [use]                                # which preset each of Qwen's mode slots uses
    hybrid-thinking = "my-precise"

API keys are never written here (the system keyring holds them). Invalid entries are reported with their key and
skipped (or replaced by the default), never fatal. The file is read again only when its stamp (time, size,
inode) changed, and parsed again only when its bytes did; what each section means is worked out once per parse
(`interpreted`). Saving edits
the file in place with tomlkit, so the user's comments, order and every section survive (also ones this
version does not know). A file that does not parse is never overwritten: saving raises `SettingsError` (an
`OSError`) until it is fixed.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from qwen_chat.qwen3.sampling import MAX_SEED, MAX_THINKING_BUDGET
from qwen_chat.system.paths import config_dir

T = TypeVar("T")

CONTEXT_CHOICES = ("auto", "native", "64k", "128k", "256k")  # as context_presets.py names them
KNOWN_SECTIONS = ("theme", "endpoints", "keys", "chat", "presets", "overrides", "use", "tools", "engine")
HEADER = ("# qwen-chat settings; every section and key is described in the README's \"Settings\" section.\n"
          "# qwen-chat edits this file when you change a setting in the app; your comments are kept.\n"
          "# API keys live in the system keyring, never here.\n")


class SettingsError(OSError):
    """settings.toml exists but does not parse: nothing is written over it."""


@dataclass(frozen=True)
class Endpoint:
    name: str
    url: str
    model: str | None = None


@dataclass(frozen=True)
class ChatSettings:
    thinking_budget: int = 0  # tokens; 0 = no limit
    context: str = "auto"  # one of CONTEXT_CHOICES; auto: the planner picks what fits
    persona: str = ""  # "" = no persona
    min_tokens_per_second: float = 8.0  # the recommendation's "interactive": about reading speed
    seed: int | None = None  # every answer's sampling seed, unless its preset has one; None: random


def settings_path() -> Path:
    return config_dir() / "settings.toml"


def toml_loads(text: str) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    return tomllib.loads(text)


# --- the whole document ----------------------------------------------------------------------------------------


@dataclass
class _Parsed:
    """One parse of the file, and what each section means in it (built on first use)."""

    raw: bytes | None  # the file as it was parsed; None: no file
    document: dict[str, Any]
    problems: list[str]  # the file does not parse
    views: dict[Hashable, tuple[Any, list[str]]] = field(default_factory=dict)
    stamp: tuple[int, ...] | None = None  # os.stat of the bytes in `raw`; None: not to be trusted (see _stamp)


_parsed: dict[Path, _Parsed] = {}
_lock = threading.RLock()
# Modification times tick coarsely (a few ms on Linux, 1-2 s on FAT and HFS+): a write within the same tick as
# the one read keeps the time and maybe the size, so a stamp younger than this is never trusted alone.
SETTLED_NS = 2_000_000_000


def _stamp(path: Path) -> tuple[int, ...] | None:
    """What says the file is unchanged without reading it: its time, size and inode (a save replaces the file,
    so the inode changes too); () when there is no file; None when it was written too recently to tell."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return ()
    except OSError:
        return None
    if time.time_ns() - stat.st_mtime_ns < SETTLED_NS:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino, stat.st_dev


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _current() -> _Parsed:
    """The parse of the file as it is now: read only when its stamp changed (or is too young to trust), then
    parsed only when its bytes changed. Four loaders ask for every answer; none of them costs a read."""
    path = settings_path()
    stamp = _stamp(path)  # taken before the read: a write after it changes the stamp, so it is read next time
    with _lock:
        cached = _parsed.get(path)
        if cached is not None and stamp is not None and cached.stamp == stamp:
            return cached
        try:
            raw = _read(path)
        except OSError as exc:
            return _Parsed(None, {}, [f"{path}: {exc}; its settings are ignored"])
        if cached is not None and cached.raw == raw:
            cached.stamp = stamp
            return cached
        document: dict[str, Any] = {}
        problems: list[str] = []
        if raw is not None:
            try:
                document = toml_loads(raw.decode("utf-8"))
            except Exception as exc:  # a broken file is reported, never fatal
                problems.append(f"{path}: {exc}; its settings are ignored")
        _parsed[path] = parsed = _Parsed(raw, document, problems, stamp=stamp)
        return parsed


def interpreted(key: Hashable, build: Callable[[dict[str, Any], list[str]], T], problems: list[str] | None) -> T:
    """What a section means (`build` reads the parsed document and reports its problems), worked out once per
    parse of the file; the problems are handed out again to every caller that asks for them."""
    with _lock:
        parsed = _current()
        if key not in parsed.views:
            found = list(parsed.problems)
            parsed.views[key] = (build(parsed.document, found), found)
        value, found = parsed.views[key]
    if problems is not None:
        problems.extend(found)
    return value


def read_document(problems: list[str] | None = None) -> dict[str, Any]:
    """The parsed file (shared: do not change it); {} when it is missing, or broken (reported: its settings
    are ignored)."""
    parsed = _current()
    if problems is not None:
        problems.extend(parsed.problems)
    return parsed.document


def update_document(change: Callable[[dict[str, Any]], None]) -> None:
    """Read the file, let `change` edit the document in place, write it back: comments, order and every section
    are kept (tomlkit edits the text)."""
    import tomlkit

    path = settings_path()
    document = tomlkit.document()
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        try:
            toml_loads(text)  # the reader's verdict: what it cannot read is never overwritten
            document = tomlkit.parse(text)
        except Exception as exc:
            raise SettingsError(f"{path} has an error ({exc}); fix it first: nothing was saved") from exc
    else:
        for line in HEADER.splitlines():
            document.add(tomlkit.comment(line.removeprefix("# ")))
        document.add(tomlkit.nl())
    change(document)
    write_document(document)


def write_document(document: dict[str, Any]) -> None:
    import tomlkit

    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(tomlkit.dumps(document), encoding="utf-8")
    os.replace(tmp, path)


def section(document: dict[str, Any], name: str) -> dict[str, Any]:
    """A table of the document, created if missing (for writers)."""
    if not isinstance(document.get(name), dict):
        document[name] = {}  # tomlkit stores a table made from it: the one to fill is the stored one
    return document[name]


def prune(document: dict[str, Any], name: str) -> None:
    """Drop a table that became empty so the file stays tidy."""
    if isinstance(document.get(name), dict) and not document[name]:
        del document[name]


# --- endpoints and theme ---------------------------------------------------------------------------------------


def load_endpoints(problems: list[str] | None = None) -> dict[str, Endpoint]:
    return interpreted("endpoints", _endpoints, problems)


def _endpoints(document: dict[str, Any], problems: list[str]) -> dict[str, Endpoint]:
    path = settings_path()
    found = {}
    endpoints = document.get("endpoints") or {}
    if not isinstance(endpoints, dict):
        report_problem(problems, "endpoints", "must be a table of [endpoints.NAME] entries; ignored")
        return {}
    for name, entry in endpoints.items():
        url = entry.get("url") if isinstance(entry, dict) else None
        model = entry.get("model") if isinstance(entry, dict) else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            if problems is not None:
                problems.append(f"{path}: endpoints.{name}.url must be an http(s) URL; entry ignored")
            continue
        if model is not None and not isinstance(model, str):
            if problems is not None:
                problems.append(f"{path}: endpoints.{name}.model must be text; entry ignored")
            continue
        found[name] = Endpoint(name, url.rstrip("/"), model)
    return found


def load_theme(problems: list[str] | None = None) -> str | None:
    return interpreted("theme", _theme, problems)


def _theme(document: dict[str, Any], problems: list[str]) -> str | None:
    theme = document.get("theme")
    if theme is not None and not isinstance(theme, str):
        problems.append(f"{settings_path()}: theme must be a theme name; ignored")
        return None
    return theme


def save_endpoint(endpoint: Endpoint) -> None:
    """Add or replace one saved endpoint, keeping everything else."""

    def change(document: dict[str, Any]) -> None:
        entry = {"url": endpoint.url}
        if endpoint.model:
            entry["model"] = endpoint.model
        section(document, "endpoints")[endpoint.name] = entry

    update_document(change)


def save_theme(theme: str) -> None:
    """Save the theme unless it is the one saved already: the app saves whenever Textual's theme changes, which
    includes applying the saved theme at every start, and that must leave the file (and its time) untouched."""
    if read_document().get("theme") == theme:
        return
    update_document(lambda document: document.__setitem__("theme", theme))


# --- chat defaults ---------------------------------------------------------------------------------------------


def _chat_problem(key: str, value: object) -> str | None:
    if key == "thinking_budget":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_THINKING_BUDGET:
            return f"must be a whole number of tokens between 0 and {MAX_THINKING_BUDGET}, 0 = no limit (got {value!r})"
    elif key == "context":
        if value not in CONTEXT_CHOICES:
            return f"must be one of {', '.join(CONTEXT_CHOICES)} (got {value!r})"
    elif key == "persona" and not isinstance(value, str):
        return f"must be a persona name in quotes, \"\" for none (got {value!r})"
    elif key == "min_tokens_per_second" and (isinstance(value, bool) or not isinstance(value, int | float)
                                             or not 0 < value <= 1000):
        return f"must be a number of tokens a second above 0 and at most 1000 (got {value!r})"
    elif key == "seed" and value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                                  or not 0 <= value <= MAX_SEED):
        return f"must be a whole number between 0 and {MAX_SEED}, or left out for a random one (got {value!r})"
    return None


def load_chat(problems: list[str] | None = None) -> ChatSettings:
    return interpreted("chat", _chat, problems)


def _chat(document: dict[str, Any], problems: list[str]) -> ChatSettings:
    chat = document.get("chat") or {}
    if not isinstance(chat, dict):
        report_problem(problems, "chat", "must be a table ([chat]); the defaults are used")
        return ChatSettings()
    default = ChatSettings()
    values: dict[str, Any] = {}
    for key, value in chat.items():
        if not hasattr(default, key):
            report_problem(problems, f"chat.{key}", f"unknown setting (known: {', '.join(vars(default))}); ignored")
            continue
        problem = _chat_problem(key, value)
        if problem:
            fallback = "a random seed is used" if key == "seed" else f"the default {getattr(default, key)!r} is used"
            report_problem(problems, f"chat.{key}", f"{problem}; {fallback}")
            continue
        values[key] = value
    return ChatSettings(**values)


def save_chat(chat: ChatSettings) -> None:
    for key, value in vars(chat).items():
        problem = _chat_problem(key, value)
        if problem:
            raise ValueError(f"chat.{key} {problem}")
    def change(document: dict[str, Any]) -> None:
        table = section(document, "chat")
        for key, value in vars(chat).items():
            if value is None:  # TOML has no None: a key left out is one (a random seed)
                table.pop(key, None)
            else:
                table[key] = value  # key by key: the comments in the user's [chat] stay

    update_document(change)


def report_problem(problems: list[str] | None, key: str, message: str) -> None:
    """A problem with one key of the file, named as the user finds it: `path: key: message`."""
    if problems is not None:
        problems.append(f"{settings_path()}: {key}: {message}")
