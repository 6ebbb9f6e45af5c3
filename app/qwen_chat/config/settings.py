"""The settings file: one `settings.toml` in the config folder (`QWEN_CHAT_CONFIG_DIR` overrides) holds everything.

    theme = "qwen-dark"

    [endpoints.lab]                      # saved OpenAI-compatible servers (`--endpoint lab`)
    url = "http://gpu-box:8000/v1"
    model = "Qwen/Qwen3-235B-A22B"      # optional

    [keys]                               # binding id = key(s); alternatives separated by commas
    toggle-thinking = "ctrl+t,f9"

    [chat]                               # defaults for new conversations
    thinking_budget = 0                  # tokens of thinking per answer; 0 = no limit
    context = "auto"                     # auto, native, 64k, 128k or 256k
    persona = ""                         # a persona name; "" = none

    [presets.my-precise]                 # a named sampling preset (presets.py reads these three sections)
    base = "hybrid-thinking"
    temperature = 0.3

    [overrides.hybrid-thinking]          # the user's edits of Qwen's own preset
    top_k = 40

    [use]                                # which preset each of Qwen's mode slots uses
    hybrid-thinking = "my-precise"

API keys are never written here (the system keyring holds them). Invalid entries are reported with their key and
skipped (or replaced by the default), never fatal. Saving rewrites the whole file from its parsed content, so every
section survives (also ones this version does not know); comments are not kept. A file that does not parse is never
overwritten: saving raises `SettingsError` (an `OSError`) until it is fixed.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import string
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwen_chat.qwen3.sampling import MAX_THINKING_BUDGET
from qwen_chat.system.paths import config_dir

CONTEXT_CHOICES = ("auto", "native", "64k", "128k", "256k")  # as context_presets.py names them
KNOWN_SECTIONS = ("theme", "endpoints", "keys", "chat", "presets", "overrides", "use")
HEADER = ("# qwen-chat settings; every section and key is described in the README's \"Settings\" section.\n"
          "# qwen-chat rewrites this file when you change a setting in the app (comments are not kept).\n"
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


def settings_path() -> Path:
    return config_dir() / "settings.toml"


def toml_loads(text: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib.loads(text)


# --- the whole document ----------------------------------------------------------------------------------------


def read_document(problems: list[str] | None = None) -> dict[str, Any]:
    """The parsed file; {} when it is missing, or broken (reported: its settings are ignored)."""
    path = settings_path()
    if not path.is_file():
        return {}
    try:
        return toml_loads(path.read_text(encoding="utf-8"))
    except Exception as exc:  # a broken file is reported, never fatal
        if problems is not None:
            problems.append(f"{path}: {exc}; its settings are ignored")
        return {}


def update_document(change: Callable[[dict[str, Any]], None]) -> None:
    """Read the file, let `change` edit the parsed document in place, write it back (every section kept)."""
    path = settings_path()
    document: dict[str, Any] = {}
    if path.is_file():
        try:
            document = toml_loads(path.read_text(encoding="utf-8"))
        except Exception as exc:
            raise SettingsError(f"{path} has an error ({exc}); fix it first: nothing was saved") from exc
    change(document)
    write_document(document)


def write_document(document: dict[str, Any]) -> None:
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(dumps(document), encoding="utf-8")
    os.replace(tmp, path)


def section(document: dict[str, Any], name: str) -> dict[str, Any]:
    """A table of the document, created if missing (for writers)."""
    table = document.get(name)
    if not isinstance(table, dict):
        table = document[name] = {}
    return table


def prune(document: dict[str, Any], name: str) -> None:
    """Drop a table that became empty so the file stays tidy."""
    if isinstance(document.get(name), dict) and not document[name]:
        del document[name]


# --- endpoints and theme ---------------------------------------------------------------------------------------


def load_endpoints(problems: list[str] | None = None) -> dict[str, Endpoint]:
    path = settings_path()
    found = {}
    endpoints = read_document(problems).get("endpoints") or {}
    if not isinstance(endpoints, dict):
        _report(problems, "endpoints", "must be a table of [endpoints.NAME] entries; ignored")
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
    theme = read_document().get("theme")  # a broken file is reported by the other loaders
    if theme is not None and not isinstance(theme, str):
        if problems is not None:
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
    update_document(lambda document: document.__setitem__("theme", theme))


# --- keys ------------------------------------------------------------------------------------------------------

# Textual's key names, written out here because nothing outside tui/ imports Textual (a test checks both agree)
_MODIFIERS = ("ctrl", "shift", "alt", "meta", "super", "hyper")
_NAMED_KEYS = frozenset([
    "escape", "enter", "return", "tab", "space", "backspace", "delete", "insert", "home", "end", "pageup", "pagedown",
    "up", "down", "left", "right", "newline", "at", "slash", "backslash", "minus", "plus", "underscore",
    *(f"f{n}" for n in range(1, 25))])
_CHARACTER_NAMES = {"solidus": "slash", "reverse_solidus": "backslash", "commercial_at": "at",
                    "hyphen_minus": "minus", "plus_sign": "plus", "low_line": "underscore"}


def _character_key(character: str) -> str:
    """Textual's name for a typed character: "/" -> "slash", "?" -> "question_mark", "a" -> "a"."""
    if character.isalnum():
        return character
    try:
        name = unicodedata.name(character).lower().replace("-", "_").replace(" ", "_")
    except ValueError:
        return {"\t": "tab"}.get(character, character)
    return _CHARACTER_NAMES.get(name, name)


_PUNCTUATION_KEYS = frozenset(_character_key(c) for c in string.punctuation)


def _is_key_name(name: str) -> bool:
    """A printable character, a named key, or a character by its Unicode name ("question_mark")."""
    if len(name) == 1:
        return name.isprintable()
    if name in _NAMED_KEYS or name in _PUNCTUATION_KEYS:
        return True
    if not name or name != name.lower():
        return False
    try:
        unicodedata.lookup(name.replace("_", " ").upper())
    except KeyError:
        return False
    return True


def _normal_key(key: str) -> str:
    """Textual's names for single characters after a modifier too: "ctrl+/" -> "ctrl+slash"."""
    *modifiers, name = key.split("+")
    return "+".join([*modifiers, _character_key(name) if len(name) == 1 else name])


def key_problem(value: object) -> str | None:
    """Why `value` is not a usable key list ("ctrl+t" or "ctrl+t, f9"), or None when it is."""
    if not isinstance(value, str) or not value.strip():
        return f"must be a key such as \"ctrl+t\" or several separated by commas (got {value!r})"
    for key in (part.strip() for part in value.split(",")):
        if not key:
            return f"has an empty key between commas (got {value!r})"
        *modifiers, name = key.split("+")
        bad = [m for m in modifiers if m not in _MODIFIERS]
        if bad:
            return f"{key!r}: {bad[0]!r} is not a modifier (use {', '.join(_MODIFIERS)})"
        if not _is_key_name(name):
            return f"{key!r}: {name!r} is not a key name (e.g. a, f5, escape, enter, tab, up, pageup, slash)"
    return None


def load_keymap(known_ids: set[str], problems: list[str] | None = None) -> dict[str, str]:
    """`[keys]` as a keymap for `App.set_keymap`: binding id -> "key" or "key1,key2" (spaces removed)."""
    keys = read_document(problems).get("keys") or {}
    if not isinstance(keys, dict):
        _report(problems, "keys", "must be a table of binding id = \"key\"; ignored")
        return {}
    keymap = {}
    for binding_id, value in keys.items():
        if binding_id not in known_ids:
            _report(problems, f"keys.{binding_id}", f"no such action (known: {', '.join(sorted(known_ids))}); ignored")
            continue
        problem = key_problem(value)
        if problem:
            _report(problems, f"keys.{binding_id}", f"{problem}; ignored")
            continue
        keymap[binding_id] = ",".join(_normal_key(part.strip()) for part in value.split(","))
    return keymap



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
    return None


def load_chat(problems: list[str] | None = None) -> ChatSettings:
    chat = read_document(problems).get("chat") or {}
    if not isinstance(chat, dict):
        _report(problems, "chat", "must be a table ([chat]); the defaults are used")
        return ChatSettings()
    default = ChatSettings()
    values: dict[str, Any] = {}
    for key, value in chat.items():
        if not hasattr(default, key):
            _report(problems, f"chat.{key}", f"unknown setting (known: {', '.join(vars(default))}); ignored")
            continue
        problem = _chat_problem(key, value)
        if problem:
            _report(problems, f"chat.{key}", f"{problem}; the default {getattr(default, key)!r} is used")
            continue
        values[key] = value
    return ChatSettings(**values)


def save_chat(chat: ChatSettings) -> None:
    for key, value in vars(chat).items():
        problem = _chat_problem(key, value)
        if problem:
            raise ValueError(f"chat.{key} {problem}")
    update_document(lambda document: document.__setitem__("chat", dict(vars(chat))))


def _report(problems: list[str] | None, key: str, message: str) -> None:
    if problems is not None:
        problems.append(f"{settings_path()}: {key}: {message}")


# --- a small TOML writer (tomllib only reads) ------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    # JSON string escapes are TOML basic-string escapes; DEL is the one control character JSON leaves alone
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to settings.toml")


def dumps(document: dict[str, Any]) -> str:
    """TOML text for a parsed document: top-level values first, then the tables in the documented order."""
    order = {name: index for index, name in enumerate(KNOWN_SECTIONS)}
    keys = sorted(document, key=lambda k: order.get(k, len(order)))  # stable: unknown ones keep their order
    lines = [HEADER]
    scalars = [k for k in keys if not isinstance(document[k], dict)]
    for key in scalars:
        lines.append(f"{_key(key)} = {_value(document[key])}")
    if scalars:
        lines.append("")
    for key in keys:
        if isinstance(document[key], dict):
            _table([key], document[key], lines)
    return "\n".join(lines).rstrip("\n") + "\n"


def _table(path: list[str], table: dict[str, Any], lines: list[str]) -> None:
    values = {k: v for k, v in table.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if values or not tables:  # an empty table is written too, so that it round-trips
        lines.append(f"[{'.'.join(_key(p) for p in path)}]")
        lines.extend(f"{_key(k)} = {_value(v)}" for k, v in values.items())
        lines.append("")
    for key, sub in tables.items():
        _table([*path, key], sub, lines)
