"""settings.toml [keys]: the user's key bindings, checked against Textual's key names.

    [keys]                               # binding id = key(s); alternatives separated by commas
    toggle-thinking = "ctrl+t,f10"

A key that Textual would never send, or an id no binding has, is reported with its key and skipped.
"""

from __future__ import annotations

import string
import unicodedata
from typing import Any

from qwen_chat.config.settings import interpreted, report_problem

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
    return interpreted(("keys", frozenset(known_ids)), lambda document, found: _keymap(document, known_ids, found),
                       problems)


def _keymap(document: dict[str, Any], known_ids: set[str], problems: list[str]) -> dict[str, str]:
    keys = document.get("keys") or {}
    if not isinstance(keys, dict):
        report_problem(problems, "keys", "must be a table of binding id = \"key\"; ignored")
        return {}
    keymap = {}
    for binding_id, value in keys.items():
        if binding_id not in known_ids:
            known = ", ".join(sorted(known_ids))
            report_problem(problems, f"keys.{binding_id}", f"no such action (known: {known}); ignored")
            continue
        problem = key_problem(value)
        if problem:
            report_problem(problems, f"keys.{binding_id}", f"{problem}; ignored")
            continue
        keymap[binding_id] = ",".join(_normal_key(part.strip()) for part in value.split(","))
    return keymap
