"""Why an MCP server is down or a call failed, in one line a person (or the model) can act on.

The SDK raises from inside task groups, so what arrives is often an exception group around the real error;
`leaf` digs it out. Messages name the command or the URL, never a header or an environment value (they may be
secrets).
"""

from __future__ import annotations

import signal

import httpx2
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

from qwen_chat.config.mcp_config import ServerEntry


def leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups; duck-typed, as 3.10 has no ExceptionGroup."""
    while True:
        inner = getattr(exc, "exceptions", None)
        if not isinstance(inner, (list, tuple)) or not inner:
            return exc
        exc = inner[0]


def is_connection_lost(exc: BaseException) -> bool:
    """Whether the connection itself failed (as opposed to the server answering with an error)."""
    error = leaf(exc)
    if isinstance(error, MCPError):
        return error.code == CONNECTION_CLOSED
    return isinstance(error, (httpx2.TransportError, ConnectionError, EOFError))


def describe(exc: BaseException, entry: ServerEntry) -> str:
    """Why connecting to `entry` failed."""
    error = leaf(exc)
    if isinstance(error, FileNotFoundError) and entry.transport == "stdio":
        if entry.cwd and error.filename == entry.cwd:
            return f"working folder not found: {entry.cwd}"
        return f"command not found: {entry.command}"
    if isinstance(error, PermissionError) and entry.transport == "stdio":
        return f"cannot run {entry.command}: permission denied"
    if isinstance(error, MCPError) and error.code == CONNECTION_CLOSED:
        return "the server closed the connection"
    return _common(error, entry.url)


def describe_call(exc: BaseException, url: str | None) -> str:
    """Why a call failed (the server did not answer with a result)."""
    error = leaf(exc)
    if isinstance(error, MCPError):
        if error.code == CONNECTION_CLOSED:
            return "the server closed the connection during the call"
        if error.code == REQUEST_TIMEOUT:
            return "the server did not answer in time"
    return _common(error, url)


def _common(error: BaseException, url: str | None) -> str:
    where = url or "the server"
    if isinstance(error, httpx2.HTTPStatusError):
        status = error.response.status_code
        hint = " (check its headers: a token may be missing or wrong)" if status in (401, 403) else ""
        return f"{where} answered HTTP {status} {error.response.reason_phrase}{hint}".strip()
    if isinstance(error, httpx2.ConnectError):
        return f"cannot connect to {where}: connection refused or host unreachable ({_text(error)})"
    if isinstance(error, httpx2.TimeoutException):
        return f"{where} did not answer in time ({type(error).__name__})"
    if isinstance(error, httpx2.TransportError):  # a read or write on an open connection failed: it is gone
        detail = f": {_text(error)}" if str(error) else ""
        return f"lost the connection to {where} ({type(error).__name__}{detail})"
    if isinstance(error, MCPError):
        return f"the server answered with an error: {_text(error.error.message)} (code {error.code})"
    if isinstance(error, ValueError):  # a secret that is not set, or parameters the SDK refused
        return _text(error)
    return f"{type(error).__name__}: {_text(error)}" if str(error) else type(error).__name__


def exit_text(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the server was killed ({name})"
    return f"the server exited with code {returncode}"


def _text(error: object) -> str:
    return " ".join(str(error).split())
