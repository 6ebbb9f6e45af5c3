"""settings.toml [tools]: the user's standing approvals and the limits of a tool loop.

    [tools]
    allow_tools = ["files/read_file"]   # server/tool pairs that run without asking
    allow_servers = ["weather"]         # every tool of these servers runs without asking
    max_rounds = 20                     # tool rounds in one answer before the app stops the loop
    call_timeout = 60                   # seconds before a call is cancelled
    result_limit = 20000                # characters of a result the model is sent (the rest is cut, with a note)

A rule is only ever added by the user (an "Always allow" answer, or editing this file) and removed in the tools
panel or here. Bad values are reported with their key and the default is used.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from qwen_chat.config.settings import interpreted, section, settings_path, update_document

LIMITS = {"max_rounds": (1, 200), "call_timeout": (1, 3600), "result_limit": (1000, 1_000_000)}


@dataclass(frozen=True)
class ToolSettings:
    allow_tools: tuple[str, ...] = ()  # "server/tool"
    allow_servers: tuple[str, ...] = ()
    max_rounds: int = 20
    call_timeout: int = 60
    result_limit: int = 20_000

    def allows(self, server: str, tool: str) -> bool:
        return server in self.allow_servers or f"{server}/{tool}" in self.allow_tools

    def with_rule(self, server: str, tool: str | None = None) -> ToolSettings:
        """These settings with one more standing approval (of `tool` on `server`, or of the whole server)."""
        if tool:
            return replace(self, allow_tools=(*self.allow_tools, f"{server}/{tool}"))
        return replace(self, allow_servers=(*self.allow_servers, server))


def load_tool_settings(problems: list[str] | None = None) -> ToolSettings:
    return interpreted("tools", _tools, problems)


def _tools(document: dict[str, Any], problems: list[str]) -> ToolSettings:
    table = document.get("tools") or {}
    if not isinstance(table, dict):
        problems.append(f"{settings_path()}: tools: must be a table ([tools]); the defaults are used")
        return ToolSettings()
    default, values = ToolSettings(), dict[str, Any]()
    for key, value in table.items():
        problem = _problem(key, value, default)
        if problem:
            problems.append(f"{settings_path()}: tools.{key}: {problem}")
            continue
        values[key] = tuple(value) if isinstance(value, list) else value
    return replace(default, **values)


def _problem(key: str, value: object, default: ToolSettings) -> str | None:
    if not hasattr(default, key):
        return f"unknown setting (known: {', '.join(vars(default))}); ignored"
    if key in LIMITS:
        low, high = LIMITS[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            fallback = getattr(default, key)
            return f"must be a whole number from {low} to {high} (got {value!r}); the default {fallback} is used"
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        return f"must be a list of names in quotes (got {value!r}); no rule of it is used"
    return None


def add_rule(server: str, tool: str | None = None) -> None:
    """Always allow this tool (`tool` given) or every tool of this server."""
    key, name = ("allow_tools", f"{server}/{tool}") if tool else ("allow_servers", server)

    def change(document: dict[str, Any]) -> None:
        table = section(document, "tools")
        current = [str(v) for v in table.get(key, [])]
        if name not in current:
            table[key] = [*current, name]

    update_document(change)


def remove_rule(rule: str) -> bool:
    """Revoke a rule ("server/tool" or "server"); False when there was none."""
    found = False

    def change(document: dict[str, Any]) -> None:
        nonlocal found
        table = section(document, "tools")
        for key in ("allow_tools", "allow_servers"):
            current = [str(v) for v in table.get(key, [])]
            if rule in current:
                found = True
                table[key] = [v for v in current if v != rule]

    if rule in load_tool_settings().allow_tools + load_tool_settings().allow_servers:
        update_document(change)
    return found


def rules() -> list[str]:
    """Every standing approval, servers first."""
    settings = load_tool_settings()
    return [*settings.allow_servers, *settings.allow_tools]

