"""One MCP server's connection, as a task on the hub's event loop.

The task enters `async with Client(...)` and stays inside it until it is told to stop or the server goes away,
so the SDK's cancel scopes and task groups open and close in the one task that owns them. A deadline on a
cancel scope around the whole block bounds the connect (a server that never answers initialize is cancelled
out of it, its process stopped by the SDK); once connected the deadline is lifted.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shlex
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream
from mcp import Client, StdioServerParameters
from mcp.client._transport import TransportStreams
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import Implementation, ToolListChangedNotification

from qwen_chat.config.mcp_config import ServerEntry, resolve_secrets
from qwen_chat.tools.mcp_errors import describe, exit_text, is_connection_lost
from qwen_chat.tools.mcp_results import ServerState, ToolSpec, tool_spec
from qwen_chat.tools.mcp_stderr import StderrLog, StderrPipe

log = logging.getLogger(__name__)
_PAGE_CAP = 100  # tools/list pages read at most: a server whose cursor never ends cannot hang the connect


class Ending:
    """Why a connection should end: told to stop (`reason` None), or the server went away (`reason` says how).
    The first cause wins: the stream ending during our own stop is not a loss."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.reason: str | None = None
        self.lost = False

    def stop(self) -> None:
        self.event.set()

    def lose(self, reason: str | None = None) -> None:
        if not self.event.is_set():
            self.lost, self.reason = True, reason
            self.event.set()


class Connection:
    """Lives on the hub's loop: `run()` is its task; `client` is set while it is up (calls use it from their own
    tasks); `publish` hands every new state to the hub."""

    def __init__(self, entry: ServerEntry, connect_timeout: float, log: StderrLog, client_info: Implementation,
                 publish: Callable[[Connection, ServerState], None]) -> None:
        self.entry = entry
        self.connect_timeout = connect_timeout
        self.client: Client | None = None
        self.ending = Ending()
        self.settled = anyio.Event()  # set once the connect has succeeded or failed
        self._log = log
        self._client_info = client_info
        self._publish = publish
        self._process: Any = None  # the stdio server's process, for its exit code
        self._scope = anyio.CancelScope()  # around the connection: its deadline bounds the connect
        self._tools_changed: MemoryObjectSendStream[None] | None = None

    async def run(self) -> None:
        self._publish(self, ServerState(self.entry.name, "connecting"))
        try:
            error = await self._session()
        except Exception as exc:  # a bug here, not the server's: say so rather than stay "connecting" forever
            log.exception("MCP connection %s failed", self.entry.name)
            error = f"internal error in qwen-chat: {type(exc).__name__}: {exc}"
        self.settled.set()
        self._publish(self, ServerState(self.entry.name, "down", error or "stopped"))

    def stop(self) -> None:
        """End the connection (from the loop). One still connecting is cancelled out of its handshake at once."""
        self.ending.stop()
        if self.client is None:
            self._scope.cancel()

    async def _session(self) -> str | None:
        """Connect and serve until the end; the reason it ended badly, or None when it was told to stop."""
        stderr = StderrPipe(self.entry.name, self._log) if self.entry.transport == "stdio" else None
        if stderr is not None:
            self._log.write(self.entry.name, f"--- starting {shlex.join([self.entry.command or '', *self.entry.args])}")
        self._scope.deadline = anyio.current_time() + self.connect_timeout
        failure: Exception | None = None
        try:
            with self._scope:
                await self._connected(stderr)
        except Exception as exc:
            failure = exc
        finally:
            self.client = None
            if stderr is not None:
                stderr.spawned()
        if self.ending.event.is_set() and not self.ending.lost:
            return None
        if self._scope.cancel_called:  # the deadline passed while connecting (whatever the unwinding raised)
            timed_out = f"timed out after {self.connect_timeout:g} s waiting for the server to start"
            return await self._with_stderr(timed_out, stderr, exited=False)
        if failure is not None and not is_connection_lost(failure):
            return describe(failure, self.entry)
        lost = describe(failure, self.entry) if failure is not None else self.ending.reason
        return await self._with_stderr(lost or "the server closed the connection", stderr, exited=True)

    async def _connected(self, stderr: StderrPipe | None) -> None:
        async with Client(self._transport(stderr), client_info=self._client_info, cache=None,
                          message_handler=self._on_message) as client:
            tools = await _list_tools(client, self.entry.name)
            self._scope.deadline = math.inf
            self.client = client
            self.settled.set()
            self._publish(self, ServerState(self.entry.name, "up", None, tools))
            async with anyio.create_task_group() as group:
                group.start_soon(self._follow_tool_changes, client)
                await self.ending.event.wait()
                group.cancel_scope.cancel()

    async def _follow_tool_changes(self, client: Client) -> None:
        """Keep the published tool list current: list the tools again whenever the server says they changed."""
        send, receive = anyio.create_memory_object_stream[None](1)
        self._tools_changed = send
        async with anyio.create_task_group() as group:
            group.start_soon(self._listen, client)
            async for _ in receive:
                try:
                    tools = await _list_tools(client, self.entry.name)
                except Exception as exc:  # the server went away meanwhile: the watched stream reports that
                    log.debug("MCP server %s: listing the changed tools failed: %r", self.entry.name, exc)
                    continue
                if not self.ending.event.is_set():
                    self._publish(self, ServerState(self.entry.name, "up", None, tools))

    async def _listen(self, client: Client) -> None:
        """Servers of the 2026-07-28 protocol announce changes on a subscription stream (older ones send a
        notification: `_on_message`)."""
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _event in subscription:
                    self._tool_list_changed()
        except Exception as exc:  # an older server, or the stream was lost: the list stays as it is
            log.debug("MCP server %s: no tool change subscription: %r", self.entry.name, exc)

    async def _on_message(self, message: object) -> None:
        if isinstance(message, ToolListChangedNotification):
            self._tool_list_changed()

    def _tool_list_changed(self) -> None:
        """Ask for one more listing; changes announced while one is pending are covered by it."""
        if self._tools_changed is not None:
            with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._tools_changed.send_nowait(None)

    async def _with_stderr(self, message: str, stderr: StderrPipe | None, exited: bool) -> str:
        """`message` with what a stdio server said last on stderr, and, when it ended from its side (`exited`),
        its exit code in place of the message."""
        if stderr is None:
            return message
        if exited:
            with anyio.move_on_after(0.5):  # its last words may still be in the pipe
                while not stderr.ended():
                    await anyio.sleep(0.01)
            if self._process is not None and self._process.returncode is not None:
                message = exit_text(self._process.returncode)
        last = stderr.last_line()
        return f"{message}: {last}" if last else message

    def _transport(self, stderr: StderrPipe | None) -> AbstractAsyncContextManager[TransportStreams]:
        entry = self.entry
        if entry.transport == "stdio":
            assert entry.command is not None and stderr is not None
            params = StdioServerParameters(command=entry.command, args=list(entry.args),
                                           env=resolve_secrets(entry.env, "env.") or None, cwd=entry.cwd)
            return self._watched(stdio_client(params, errlog=stderr.writer), stderr)
        headers = resolve_secrets(entry.headers, "headers.")
        url = entry.url or ""
        if entry.transport == "sse":
            return self._watched(sse_client(url, headers=headers, timeout=self.connect_timeout))
        return self._watched(_streamable_http(url, headers))

    @asynccontextmanager
    async def _watched(self, transport: AbstractAsyncContextManager[TransportStreams],
                       stderr: StderrPipe | None = None) -> AsyncIterator[TransportStreams]:
        """The transport, with its read stream watched: when it ends without our asking, the server is gone."""
        async with transport as (read_stream, write_stream):
            if stderr is not None:
                stderr.spawned()
                self._process = _spawned_process(transport)
            yield _WatchedReadStream(read_stream, self.ending), write_stream


@asynccontextmanager
async def _streamable_http(url: str, headers: dict[str, str]) -> AsyncIterator[TransportStreams]:
    """Streamable HTTP with our headers; the SDK leaves closing an HTTP client it was given to its owner."""
    async with create_mcp_http_client(headers=headers) as http, \
            streamable_http_client(url, http_client=http) as streams:
        yield streams


async def _list_tools(client: Client, server: str) -> tuple[ToolSpec, ...]:
    tools: list[ToolSpec] = []
    cursor: str | None = None
    for _ in range(_PAGE_CAP):
        page = await client.list_tools(cursor=cursor)
        tools.extend(tool_spec(server, tool) for tool in page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return tuple(tools)


def _spawned_process(manager: object) -> Any:
    """The server's process inside the SDK's `stdio_client`, for the exit code of a server that died. The SDK
    does not expose it; its suspended generator holds it as the local `process`. If a later SDK renames that,
    this finds nothing and the reason is reported without the code."""
    frame = getattr(getattr(manager, "gen", None), "ag_frame", None)
    process = frame.f_locals.get("process") if frame is not None else None
    return process if hasattr(process, "returncode") else None


class _WatchedReadStream:
    """A read stream that tells `ending` when it ends: the dispatcher reading it learns of the end too (it sees
    the same EOF), but keeps it to itself."""

    def __init__(self, inner: Any, ending: Ending) -> None:
        self._inner = inner
        self._ending = ending

    @property
    def last_context(self) -> Any:  # the SDK's context-carrying streams have it; the dispatcher looks for it
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Any:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._ending.lose()
            raise

    def __aiter__(self) -> _WatchedReadStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _WatchedReadStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
