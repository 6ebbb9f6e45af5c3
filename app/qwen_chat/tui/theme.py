"""Themes shipped in `themes/` (TOML files, one theme each), registered beside Textual's built-ins."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from textual.app import App
from textual.theme import Theme

from qwen_chat.config.settings import toml_loads
from qwen_chat.models.catalog import shipped_file

log = logging.getLogger("qwen_chat.theme")
DEFAULT_THEME = "qwen-dark"
_FIELDS = {"name", "dark", "primary", "secondary", "accent", "warning", "error", "success", "foreground",
           "background", "surface", "panel"}


def _load(path: Path) -> Theme:
    data = toml_loads(path.read_text(encoding="utf-8"))
    unknown = set(data) - _FIELDS
    if unknown or "name" not in data or "primary" not in data:
        raise ValueError(f"{path.name}: needs 'name' and 'primary'; unknown keys {sorted(unknown)}")
    return Theme(**data)


def register_shipped_themes(app: App[Any]) -> list[str]:
    from qwen_chat.system.paths import config_dir

    names = []
    paths = sorted(shipped_file("themes").glob("*.toml")) + sorted((config_dir() / "themes").glob("*.toml"))
    for path in paths:
        try:
            theme = _load(path)
        except Exception as exc:  # a broken theme file is reported and skipped, never fatal
            log.warning("skipping theme %s: %s", path, exc)
            app.notify(f"Theme file {path} was skipped: {exc}", severity="warning", timeout=8)
            continue
        app.register_theme(theme)
        names.append(theme.name)
    from qwen_chat.config.settings import load_theme

    saved = load_theme()
    if saved and saved in app.available_themes:
        app.theme = saved
    elif saved:
        log.warning("saved theme %r is not available; using %s", saved, DEFAULT_THEME)
        app.theme = DEFAULT_THEME
    elif DEFAULT_THEME in names:
        app.theme = DEFAULT_THEME
    return names
