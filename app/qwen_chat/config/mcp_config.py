"""`mcp.json` in the config folder: the MCP tool servers qwen-chat may start or reach.

The shape is the one Claude Desktop, Cursor, LM Studio and llama.cpp read, so a file (or an entry) copied from
one of them works here unchanged:

    {"mcpServers": {
        "files":   {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"],
                    "env": {"TOKEN": "${env:FILES_TOKEN}"}, "cwd": "/tmp"},
        "remote":  {"url": "https://example.com/mcp", "headers": {"Authorization": "Bearer ${keyring:remote}"}},
        "legacy":  {"type": "sse", "url": "https://example.com/sse", "disabled": true}}}

A broken entry is reported with the file and its key and skipped; the others still load. Keys this version
does not know (other apps add their own, such as "autoApprove") are ignored on reading and kept on writing.
Secrets stay out of the file: a value in `env` or `headers` may name an environment variable of qwen-chat's
own (`${env:NAME}`) or a system keyring entry (`${keyring:NAME}`, service "qwen-chat-mcp"); both are looked up
at connect time by `resolve_secrets`, never written back.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from qwen_chat.system.durable import fsync_folder
from qwen_chat.system.paths import config_dir

KEYRING_SERVICE = "qwen-chat-mcp"
TRANSPORTS = ("stdio", "http", "sse")
# What other apps write in "type" / "transport", lower-cased, and which of ours it means.
_TRANSPORT_ALIASES = {"stdio": "stdio", "http": "http", "streamable-http": "http", "streamablehttp": "http",
                      "streamable_http": "http", "sse": "sse"}
_SECRET = re.compile(r"\$\{(env|keyring):([^}]*)\}")
_SKIPPED = "this server is skipped"


class McpConfigError(ValueError):
    """mcp.json cannot be read or written as asked; the message says why (nothing was changed)."""


@dataclass(frozen=True)
class ServerEntry:
    """One server of mcp.json. stdio servers have `command` (and `args`, `env`, `cwd`); the others `url`."""

    name: str
    transport: str  # one of TRANSPORTS
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)  # values may hold ${env:X} / ${keyring:X}
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # values may hold ${env:X} / ${keyring:X}
    disabled: bool = False


def mcp_config_path() -> Path:
    return config_dir() / "mcp.json"


def load_servers(path: Path | None = None) -> tuple[list[ServerEntry], list[str]]:
    """The servers of mcp.json and the problems found. Never raises: a missing file is no servers."""
    path = path or mcp_config_path()
    try:
        document = _read(path)
    except McpConfigError as exc:
        return [], [f"{exc}; no MCP servers are loaded"]
    if document is None:
        return [], []
    if not isinstance(document, dict):
        return [], [f"{path.name}: must be a JSON object with \"mcpServers\"; no MCP servers are loaded"]
    servers = document.get("mcpServers", {})
    if not isinstance(servers, dict):
        return [], [f"{path.name}: mcpServers: must be an object of servers by name; no MCP servers are loaded"]
    entries: list[ServerEntry] = []
    problems: list[str] = []
    for name, raw in servers.items():
        entry, problem = parse_entry(name, raw)
        if entry is not None:
            entries.append(entry)
        else:
            problems.append(f"{path.name}: {problem}; {_SKIPPED}")
    return entries, problems


def parse_entry(name: str, raw: object) -> tuple[ServerEntry | None, str]:
    """One entry of mcpServers: the server, or None and what is wrong (`mcpServers.NAME.KEY: ...`)."""
    where = f"mcpServers.{name}"
    if not name.strip():
        return None, f"{where}: a server needs a name"
    if not isinstance(raw, dict):
        return None, f"{where}: must be an object"
    try:
        return _entry(name, raw, where), ""
    except _Bad as exc:
        return None, str(exc)


class _Bad(Exception):
    """One problem in one entry (internal: `parse_entry` turns it into its message)."""


def _entry(name: str, raw: dict[str, Any], where: str) -> ServerEntry:
    disabled = raw.get("disabled", False)
    if not isinstance(disabled, bool):
        raise _Bad(f"{where}.disabled: must be true or false")
    transport = _transport(raw, where)
    if transport == "stdio":
        return ServerEntry(name, "stdio", command=_text(raw, "command", where), disabled=disabled,
                           args=tuple(_strings(raw, "args", where)), env=_mapping(raw, "env", where),
                           cwd=_text(raw, "cwd", where, required=False))
    url = _text(raw, "url", where) or ""
    if not url.lower().startswith(("http://", "https://")):
        raise _Bad(f"{where}.url: must start with http:// or https://")
    return ServerEntry(name, transport, url=url, headers=_mapping(raw, "headers", where), disabled=disabled)


def _transport(raw: dict[str, Any], where: str) -> str:
    """The transport an entry asks for, or the one its keys imply (a url ending in /sse is SSE)."""
    for key in ("type", "transport"):
        if key in raw:
            value = raw[key]
            if not isinstance(value, str) or value.lower() not in _TRANSPORT_ALIASES:
                raise _Bad(f"{where}.{key}: must be one of \"stdio\", \"http\", \"streamable-http\", \"sse\"")
            return _TRANSPORT_ALIASES[value.lower()]
    if "command" in raw and "url" in raw:
        raise _Bad(f"{where}: has both \"command\" and \"url\"; say which with \"type\"")
    if "command" in raw:
        return "stdio"
    if "url" in raw:
        url = raw["url"]
        return "sse" if isinstance(url, str) and url.split("?")[0].rstrip("/").endswith("/sse") else "http"
    raise _Bad(f"{where}: needs a \"command\" (a program to start) or a \"url\" (a server to reach)")


def _text(raw: dict[str, Any], key: str, where: str, required: bool = True) -> str | None:
    value = raw.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"{where}.{key}: must be a non-empty string")
    return value


def _strings(raw: dict[str, Any], key: str, where: str) -> list[str]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Bad(f"{where}.{key}: must be a list of strings")
    return value


def _mapping(raw: dict[str, Any], key: str, where: str) -> dict[str, str]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise _Bad(f"{where}.{key}: must be an object of names and string values")
    for name, item in value.items():
        if not isinstance(item, str):
            raise _Bad(f"{where}.{key}.{name}: must be a string (write numbers in quotes)")
    return dict(value)


# --- secrets ---------------------------------------------------------------------------------------------------

def resolve_secrets(mapping: Mapping[str, str], where: str = "") -> dict[str, str]:
    """`mapping` with each ${env:NAME} / ${keyring:NAME} replaced by its value, looked up now.

    Raises ValueError naming the key and the variable or keyring entry that is missing.
    """
    return {key: _SECRET.sub(partial(_secret, label=f"{where}{key}"), value) for key, value in mapping.items()}


def _secret(match: re.Match[str], label: str) -> str:
    kind, name = match.group(1), match.group(2)
    if kind == "env":
        value = os.environ.get(name)
        if value is None:
            raise ValueError(f"{label}: ${{env:{name}}} is not set in qwen-chat's environment")
        return value
    value = _keyring_value(name)
    if value is None:
        raise ValueError(f"{label}: ${{keyring:{name}}} has no entry in the system keyring (service "
                         f"\"{KEYRING_SERVICE}\", user \"{name}\"); store it with: "
                         f"keyring set {KEYRING_SERVICE} {name}")
    return value


def _keyring_value(name: str) -> str | None:
    try:
        import keyring  # imported here: only entries that use the keyring pay for loading a backend

        value = keyring.get_password(KEYRING_SERVICE, name)
    except Exception:  # no usable keyring backend on this machine: the same as no entry
        return None
    return value if isinstance(value, str) else None


def mask_secrets(value: str) -> str:
    """`value` fit to be shown: ${env:X} / ${keyring:X} references as written (they name a secret, they do not
    hold one), every other run of text masked, since it may be a key written into the file."""
    return "".join(_masked(piece) for piece in re.split(r"(\$\{(?:env|keyring):[^}]*\})", value))


def _masked(piece: str) -> str:
    if _SECRET.fullmatch(piece) or not piece.strip():
        return piece
    return piece.replace(piece.strip(), "***")  # the spaces around stay: "Bearer ${env:X}" reads "*** ${env:X}"


# --- writing ---------------------------------------------------------------------------------------------------

def entry_json(entry: ServerEntry) -> dict[str, Any]:
    """An entry in the shape the other apps read: only the keys it needs."""
    raw: dict[str, Any] = {}
    if entry.transport == "stdio":
        raw["command"] = entry.command
        raw["args"] = list(entry.args)
        if entry.env:
            raw["env"] = dict(entry.env)
        if entry.cwd:
            raw["cwd"] = entry.cwd
    else:
        url = entry.url or ""
        # "type" only where the url alone would be read as the other transport
        if entry.transport == "sse" or url.split("?")[0].rstrip("/").endswith("/sse"):
            raw["type"] = entry.transport
        raw["url"] = url
        if entry.headers:
            raw["headers"] = dict(entry.headers)
    if entry.disabled:
        raw["disabled"] = True
    return raw


def add_server(entry: ServerEntry, path: Path | None = None) -> None:
    """Write `entry` into mcp.json (replacing one of the same name); other entries and keys are kept as they are."""
    path = path or mcp_config_path()
    document = _document_for_writing(path)
    document.setdefault("mcpServers", {})[entry.name] = entry_json(entry)
    _write_atomically(path, document)


def remove_server(name: str, path: Path | None = None) -> bool:
    """Drop the server `name` from mcp.json; False (and nothing written) when there is none."""
    path = path or mcp_config_path()
    document = _document_for_writing(path)
    servers = document.get("mcpServers", {})
    if name not in servers:
        return False
    del servers[name]
    _write_atomically(path, document)
    return True


def _document_for_writing(path: Path) -> dict[str, Any]:
    """The file's JSON to edit. A file that cannot be read is never written over: the user's text would be lost."""
    document = _read(path)
    if document is None:
        return {"mcpServers": {}}
    if not isinstance(document, dict) or not isinstance(document.get("mcpServers", {}), dict):
        raise McpConfigError(f"{path}: is not an object with an \"mcpServers\" object; fix it first, nothing "
                             f"was changed")
    return document


def _read(path: Path) -> Any:
    """The parsed file, or None when it does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise McpConfigError(f"{path.name}: cannot be read ({exc})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise McpConfigError(f"{path.name}: is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                             f"{exc.msg})") from exc


def _write_atomically(path: Path, document: dict[str, Any]) -> None:
    """Write a temporary file beside `path`, flush it to the disk, then rename it over: a crash or a full disk
    leaves the old file or the new one, never half of one. The old file's permissions are kept (it may hold
    secrets and be readable by its owner only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)

