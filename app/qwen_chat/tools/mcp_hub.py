"""The MCP tool servers at run time: one background thread with an asyncio loop, one connection per server.

Everything public here is synchronous and may be called from any thread; only `call` waits (for the tool), so
the caller runs it off the UI thread. States and tools are snapshots under a lock: reading them never waits for
the loop. Nothing here raises for a server's or a tool's failure: a server that cannot start is "down" with the
reason, a call that fails comes back as a ToolResult with `is_error` set.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
from mcp import Client
from mcp_types import Implementation

from qwen_chat import __version__
from qwen_chat.config.mcp_config import ServerEntry
from qwen_chat.system.paths import log_dir
from qwen_chat.tools.mcp_connection import Connection
from qwen_chat.tools.mcp_errors import describe_call, is_connection_lost
from qwen_chat.tools.mcp_results import (
    ServerState,
    ToolResult,
    ToolSpec,
    call_result,
    error_result,
    validate_arguments,
)

__all__ = ["McpHub", "Reloaded", "ServerState", "ToolResult", "ToolSpec", "validate_arguments"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_CLOSE_WAIT = 15.0  # seconds close() waits for the servers to stop (the SDK gives each up to ~6 s to exit)


@dataclass(frozen=True)
class Reloaded:
    """What a reload of mcp.json changed, by server name."""

    added: tuple[str, ...]
    changed: tuple[str, ...]  # restarted with their new entry
    removed: tuple[str, ...]


class McpHub:
    """The servers of mcp.json, connected in the background. `on_change` is called on the hub's thread after
    any server's state or tool list changed; it must not block, nor call `call` or `close` (they wait for that
    thread): it should hand the news to its own thread (a TUI posts a message)."""

    def __init__(self, entries: Iterable[ServerEntry], on_change: Callable[[], None] | None = None,
                 call_timeout: float = 60.0, connect_timeout: float = 20.0, log_path: Path | None = None,
                 result_limit: int = 100_000) -> None:
        """`result_limit`: characters of a tool's answer passed on; the rest is cut (the model's context is
        finite and a tool may return a whole file)."""
        from qwen_chat.tools.mcp_stderr import StderrLog

        self.call_timeout = call_timeout
        self.connect_timeout = connect_timeout
        self.result_limit = result_limit
        self._on_change = on_change
        self.log_path = Path(log_path) if log_path else log_dir() / "mcp-servers.log"  # the stdio servers' stderr
        self._log = StderrLog(self.log_path)
        self._client_info = Implementation(name="qwen-chat", version=__version__)
        self._entries: dict[str, ServerEntry] = {entry.name: entry for entry in entries}
        self._changed = threading.Condition()  # guards _states; notified on every change
        self._states = {name: _initial(entry) for name, entry in self._entries.items()}
        self._connections: dict[str, Connection] = {}  # these two are touched on the loop's thread only
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._turns: dict[str, asyncio.Lock] = {}  # one (re)connect or disconnect of a server at a time
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    # --- life cycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect every enabled server in the background; returns at once."""
        if self._thread is not None or self._closed:
            return
        _route_sdk_logging()
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run_loop, args=(loop,), name="mcp-hub", daemon=True)
        self._thread.start()
        for name in self._entries:
            self._submit(self._connect(name))

    def close(self) -> None:
        """Stop every server (their processes end) and the thread. Safe to call twice, or without start()."""
        if self._closed:
            return
        self._closed = True
        loop, thread = self._loop, self._thread
        if loop is not None and thread is threading.current_thread():  # from on_change: cannot wait for itself
            asyncio.ensure_future(self._stop_all(), loop=loop).add_done_callback(lambda _: loop.stop())
        elif loop is not None and thread is not None:
            stopping = asyncio.run_coroutine_threadsafe(self._stop_all(), loop)
            try:
                stopping.result(timeout=_CLOSE_WAIT)
            except Exception as exc:  # a server that would not stop: its process is abandoned, not waited on
                log.warning("MCP servers did not all stop: %r", exc)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=_CLOSE_WAIT)
        self._log.close()

    def restart(self, name: str, entry: ServerEntry | None = None) -> None:
        """Reconnect `name`, with `entry` as its new configuration when given (a fixed or new entry)."""
        if self._closed:
            return
        with self._changed:
            if entry is not None:
                self._entries[name] = entry
            if name not in self._entries:
                raise KeyError(name)
            self._states[name] = _initial(self._entries[name])  # so a wait_ready() right after this waits
            self._changed.notify_all()
        self._submit(self._connect(name))

    def reload(self, entries: Iterable[ServerEntry]) -> Reloaded:
        """Take the servers of a re-read mcp.json: new ones start, changed ones restart, gone ones stop, the
        others stay connected as they are. A hub never started (mcp.json had no servers) starts now."""
        wanted = {entry.name: entry for entry in entries}
        done = Reloaded(tuple(n for n in wanted if n not in self._entries),
                        tuple(n for n, e in wanted.items() if n in self._entries and self._entries[n] != e),
                        tuple(n for n in self._entries if n not in wanted))
        if self._thread is None and not self._closed:
            with self._changed:
                self._entries = wanted
                self._states = {name: _initial(entry) for name, entry in wanted.items()}
                self._changed.notify_all()
            if wanted:
                self.start()
            return done
        for name in done.removed:
            with self._changed:
                del self._entries[name]
                self._states.pop(name, None)
                self._changed.notify_all()
            self._submit(self._disconnect(name))
        for name in (*done.added, *done.changed):
            self.restart(name, wanted[name])
        return done

    def wait_ready(self, timeout: float) -> bool:
        """Wait until no server is still connecting; False if some still are after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while any(state.status == "connecting" for state in self._states.values()):
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return False
                self._changed.wait(left)
        return True

    # --- what there is ---------------------------------------------------------------------------------------

    def states(self) -> list[ServerState]:
        with self._changed:
            return list(self._states.values())

    def tools(self) -> list[ToolSpec]:
        """The tools of the servers that are up (two servers may offer the same name: both are listed)."""
        return [tool for state in self.states() if state.status == "up" for tool in state.tools]

    def find(self, name: str) -> ToolSpec | None:
        """The tool `name` names: a plain tool name offered by one server only, or `server__name` always."""
        tools = self.tools()
        plain = [tool for tool in tools if tool.name == name]
        if len(plain) == 1:
            return plain[0]
        return next((tool for tool in tools if tool.qualified_name == name), None)

    def functions(self) -> list[dict[str, Any]]:
        """The function specs to show the model: plain names, `server__name` where two servers share one (so
        every name shown resolves with `find`)."""
        tools = self.tools()
        counts = Counter(tool.name for tool in tools)
        return [tool.function(tool.name if counts[tool.name] == 1 else tool.qualified_name) for tool in tools]

    # --- calls -----------------------------------------------------------------------------------------------

    def call(self, server: str, tool: str, arguments: dict[str, Any], timeout: float | None = None) -> ToolResult:
        """Call a tool and wait for its result (blocking: run it off the UI thread). Never raises."""
        if self._thread is threading.current_thread():
            return error_result(f"{server}.{tool}: call() was used on the MCP hub's own thread; use call_async")
        future = self.call_async(server, tool, arguments, timeout)
        limit = (timeout or self.call_timeout) + self.connect_timeout + 5  # the loop enforces the real limit
        try:
            return future.result(timeout=limit)
        except concurrent.futures.CancelledError:
            return error_result(f"{server}.{tool}: the call was cancelled")
        except concurrent.futures.TimeoutError:
            future.cancel()
            return error_result(f"{server}.{tool}: no answer after {limit:g} s; the call was cancelled")
        except Exception as exc:  # a bug on our side: still an answer the model can read, and in the log
            log.exception("MCP call %s.%s failed", server, tool)
            return error_result(f"{server}.{tool}: the call failed ({type(exc).__name__}: {exc})")

    def call_async(self, server: str, tool: str, arguments: dict[str, Any],
                   timeout: float | None = None) -> concurrent.futures.Future[ToolResult]:
        """Start a call; the future's result is its ToolResult. `future.cancel()` cancels the call, on the
        server too (the SDK tells it the request is cancelled)."""
        if self._closed or self._loop is None:
            done: concurrent.futures.Future[ToolResult] = concurrent.futures.Future()
            done.set_result(error_result("the MCP servers are not running (closed or never started)"))
            return done
        return asyncio.run_coroutine_threadsafe(self._call(server, tool, arguments, timeout), self._loop)

    async def _call(self, server: str, tool: str, arguments: dict[str, Any], timeout: float | None) -> ToolResult:
        ready = await self._ready(server, tool)
        if isinstance(ready, ToolResult):
            return ready
        connection, client = ready
        limit = timeout if timeout is not None else self.call_timeout
        try:
            with anyio.fail_after(limit):
                result = await client.call_tool(tool, arguments)
        except TimeoutError:
            return error_result(f"{server}.{tool}: timed out after {limit:g} s; the call was cancelled")
        except Exception as exc:
            message = describe_call(exc, connection.entry.url)
            if is_connection_lost(exc):
                connection.ending.lose(message)  # the server is gone: it shows "down" and can be restarted
            return error_result(f"{server}.{tool}: {message}")
        return call_result(result, self.result_limit)

    async def _ready(self, server: str, tool: str) -> tuple[Connection, Client] | ToolResult:
        """The connection to call `server` on, or the error result saying why there is none."""
        connection = self._connections.get(server)
        turn = self._turns.get(server)
        if connection is None and turn is not None and turn.locked():
            with anyio.move_on_after(self.connect_timeout):
                async with turn:  # a restart is under way: its new connection is the one to call
                    pass
            connection = self._connections.get(server)
        if connection is None:
            entry = self._entries.get(server)
            state = "is disabled in mcp.json" if entry is not None and entry.disabled else "does not exist"
            return error_result(f"the MCP server {server!r} {state}")
        with anyio.move_on_after(self.connect_timeout):
            await connection.settled.wait()  # a server still starting is waited for, not reported down
        client = connection.client
        with self._changed:
            current = self._states.get(server)
        if client is None or current is None or current.status != "up":
            why = f": {current.error}" if current is not None and current.error else ""
            return error_result(f"the MCP server {server!r} is {current.status if current else 'gone'}{why}")
        if not any(spec.name == tool for spec in current.tools):
            return error_result(f"the MCP server {server!r} has no tool named {tool!r}")
        return connection, client

    # --- on the loop -----------------------------------------------------------------------------------------

    def _run_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def _submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T] | None:
        if self._loop is None or self._closed:
            coroutine.close()
            return None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    async def _connect(self, name: str) -> None:
        async with self._turns.setdefault(name, asyncio.Lock()):
            await self._disconnect_now(name)
            entry = self._entries.get(name)
            if entry is not None and not self._closed:
                self._start_connection(entry)

    def _start_connection(self, entry: ServerEntry) -> None:
        name = entry.name
        if entry.disabled:
            self._set_state(_initial(entry))
            return
        connection = Connection(entry, self.connect_timeout, self._log, self._client_info, self._publish)
        self._connections[name] = connection
        self._tasks[name] = asyncio.get_running_loop().create_task(connection.run(), name=f"mcp-{name}")

    async def _disconnect(self, name: str) -> None:
        async with self._turns.setdefault(name, asyncio.Lock()):
            await self._disconnect_now(name)

    async def _disconnect_now(self, name: str) -> None:
        connection = self._connections.pop(name, None)
        task = self._tasks.pop(name, None)
        if connection is not None and task is not None:
            connection.stop()
            await asyncio.gather(task, return_exceptions=True)

    async def _stop_all(self) -> None:
        names = list(self._connections)
        await asyncio.gather(*(self._disconnect(name) for name in names))
        for name in names:
            self._set_state(ServerState(name, "down", "closed"))

    def _publish(self, connection: Connection, state: ServerState) -> None:
        """A connection's new state (called on the loop). The states of a connection that was replaced or
        removed meanwhile are dropped: the current one speaks for the server."""
        if self._connections.get(state.name) is connection:
            self._set_state(state)

    def _set_state(self, state: ServerState) -> None:
        with self._changed:
            self._states[state.name] = state
            self._changed.notify_all()
        if self._on_change is not None:
            try:
                self._on_change()
            except Exception:  # the listener's bug must not stop the servers' bookkeeping
                log.exception("MCP on_change callback failed")


class _ToOurLog(logging.Handler):
    """Hands the SDK's log records to our own logger, whose handlers write them to qwen-chat.log; where logging
    was never set up (no handler anywhere) they are dropped, not printed by Python's last-resort handler."""

    def emit(self, record: logging.LogRecord) -> None:
        ours = logging.getLogger("qwen_chat.tools.mcp_sdk")
        if ours.hasHandlers():
            ours.handle(record)


def _route_sdk_logging() -> None:
    """The SDK logs a server's garbled output or a process that would not die as warnings; with no handler of
    its own, Python would print them on stderr, in the middle of the TUI's screen. They go to our log instead."""
    sdk = logging.getLogger("mcp")
    if not any(isinstance(handler, _ToOurLog) for handler in sdk.handlers):
        sdk.addHandler(_ToOurLog())
        sdk.propagate = False


def _initial(entry: ServerEntry) -> ServerState:
    return ServerState(entry.name, "disabled" if entry.disabled else "connecting")
