"""The settings file (`settings.toml` in the config folder). For now it holds saved endpoints:

    [endpoints.lab]
    url = "http://gpu-box:8000/v1"
    model = "Qwen/Qwen3-235B-A22B"      # optional

API keys are never written here (the system keyring holds them). Invalid entries are reported with their key
and skipped, never fatal.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .paths import config_dir


@dataclass(frozen=True)
class Endpoint:
    name: str
    url: str
    model: str | None = None


def settings_path() -> Path:
    return config_dir() / "settings.toml"


def _toml(text: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib.loads(text)


def load_endpoints(problems: list[str] | None = None) -> dict[str, Endpoint]:
    path = settings_path()
    if not path.is_file():
        return {}
    try:
        data = _toml(path.read_text(encoding="utf-8"))
    except Exception as exc:  # a broken file is reported, never fatal
        if problems is not None:
            problems.append(f"{path}: {exc}; its settings are ignored")
        return {}
    found = {}
    for name, entry in (data.get("endpoints") or {}).items():
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
    path = settings_path()
    if not path.is_file():
        return None
    try:
        theme = _toml(path.read_text(encoding="utf-8")).get("theme")
    except Exception:
        return None  # reported by load_endpoints
    if theme is not None and not isinstance(theme, str):
        if problems is not None:
            problems.append(f"{path}: theme must be a theme name; ignored")
        return None
    return theme


def save_endpoint(endpoint: Endpoint) -> None:
    """Add or replace one saved endpoint, keeping the others and the theme."""
    endpoints = load_endpoints()
    endpoints[endpoint.name] = endpoint
    _write(load_theme(), endpoints)


def save_theme(theme: str) -> None:
    _write(theme, load_endpoints())


def _write(theme: str | None, endpoints: dict[str, Endpoint]) -> None:
    lines = ["# qwen-chat settings. API keys live in the system keyring, never here.", ""]
    if theme:
        lines += [f"theme = {json.dumps(theme)}", ""]
    for e in endpoints.values():
        lines.append(f"[endpoints.{json.dumps(e.name)}]")
        lines.append(f"url = {json.dumps(e.url)}")
        if e.model:
            lines.append(f"model = {json.dumps(e.model)}")
        lines.append("")
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, path)
