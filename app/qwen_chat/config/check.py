"""Every problem in settings.toml and mcp.json at once, for the start-up report."""

from __future__ import annotations

from collections.abc import Iterable

from qwen_chat.config import engine_settings, keymap, mcp_config, presets, settings, tool_settings


def check(known_ids: Iterable[str] = (), problems: list[str] | None = None) -> list[str]:
    """Every problem in the file, each once: unknown sections, endpoints, theme, keys, chat and presets."""
    problems = [] if problems is None else problems
    seen = len(problems)
    document = settings.read_document(problems)
    for name in document:
        if name not in settings.KNOWN_SECTIONS:
            known = ", ".join(settings.KNOWN_SECTIONS)
            problems.append(f"{settings.settings_path()}: {name}: unknown setting (known: {known}); ignored")
    settings.load_endpoints(problems)
    settings.load_theme(problems)
    if known_ids:
        keymap.load_keymap(set(known_ids), problems)
    settings.load_chat(problems)
    tool_settings.load_tool_settings(problems)
    engine_settings.load_engine_settings(problems)
    presets.check(problems)
    problems.extend(mcp_config.load_servers()[1])  # mcp.json: its broken entries are skipped, each reported
    unique = list(dict.fromkeys(problems[seen:]))
    problems[seen:] = unique
    return problems
