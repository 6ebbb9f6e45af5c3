"""Themes shipped in `themes/` (TOML files, one theme each), registered beside Textual's built-ins.

Users add their own in the config folder's `themes/`. Every field is checked before Textual sees it: a bad
colour would otherwise crash the app (Textual parses colours only when it applies the theme, on every start once
it is the saved one). A broken file is reported, naming the file and the key, and skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from textual.app import App
from textual.color import Color, ColorParseError
from textual.theme import Theme

from qwen_chat.catalog.entries import shipped_file
from qwen_chat.config.settings import toml_loads
from qwen_chat.tui.printable import printable

log = logging.getLogger("qwen_chat.theme")
DEFAULT_THEME = "qwen-dark"
_COLOURS = ("primary", "secondary", "accent", "warning", "error", "success", "foreground", "background", "surface",
            "panel")
_FIELDS = {"name", "dark", *_COLOURS}
_COLOUR_FORMS = 'a colour in quotes, like "#7C6CF2", "rgb(124, 108, 242)" or "red"'


class ThemeFileError(ValueError):
    """A theme file that cannot be used; the message names each bad key."""


def _shown(value: object) -> str:
    """A value as the user wrote it, short, with nothing a terminal would act on (repr escapes controls)."""
    text = repr(value)
    return printable(text if len(text) <= 40 else text[:39] + "…")


def _colour_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return f"must be {_COLOUR_FORMS}, not {_shown(value)}"
    try:
        Color.parse(value)
    except ColorParseError:
        return f"{_shown(value)} is not a colour; use {_COLOUR_FORMS}"
    return None


def _problems(data: dict[str, Any]) -> list[str]:
    """Every problem of the file, each as "key: what is wrong", in the order a user reads the keys."""
    problems = [f"{printable(key)}: unknown key (known: {', '.join(sorted(_FIELDS))})"
                for key in sorted(set(data) - _FIELDS)]
    problems += [f"{key}: missing (every theme needs 'name' and 'primary')"
                 for key in ("name", "primary") if key not in data]
    name = data.get("name")
    if "name" in data and (not isinstance(name, str) or not name.strip() or printable(name) != name):
        problems.append(f"name: must be a non-empty name in quotes without control characters, not {_shown(name)}")
    if "dark" in data and not isinstance(data["dark"], bool):
        problems.append(f"dark: must be true or false (without quotes), not {_shown(data['dark'])}")
    for key in _COLOURS:
        problem = _colour_problem(data[key]) if key in data else None
        if problem:
            problems.append(f"{key}: {problem}")
    return problems


def _load(path: Path) -> Theme:
    data = toml_loads(path.read_text(encoding="utf-8"))
    problems = _problems(data)
    if problems:
        raise ThemeFileError("; ".join(problems))
    theme = Theme(**data)
    theme.to_color_system().generate()  # what applying it does: anything still wrong fails here, not later
    return theme


def register_shipped_themes(app: App[Any]) -> list[str]:
    from qwen_chat.system.paths import config_dir

    names = []
    paths = sorted(shipped_file("themes").glob("*.toml")) + sorted((config_dir() / "themes").glob("*.toml"))
    for path in paths:
        try:
            theme = _load(path)
        except Exception as exc:  # a broken theme file is reported and skipped, never fatal
            log.warning("skipping theme %s: %s", path, exc)
            # no markup: a path or a value may hold "[", which would be read as a style
            app.notify(printable(f"Theme file {path} was skipped: {exc}"), severity="warning", timeout=8,
                       markup=False)
            continue
        app.register_theme(theme)
        names.append(theme.name)
    from qwen_chat.config.settings import load_theme

    saved = load_theme()
    if saved and saved in app.available_themes:
        app.theme = saved
    elif saved:
        log.warning("saved theme %r is not available; using %s", saved, DEFAULT_THEME)
        app.notify(printable(f"The saved theme {saved!r} is not available; using {DEFAULT_THEME}."),
                   severity="warning", timeout=8, markup=False)
        app.theme = DEFAULT_THEME
    elif DEFAULT_THEME in names:
        app.theme = DEFAULT_THEME
    return names
