"""A real MCP server for the tests, written with the SDK's MCPServer.

    python stdio_server.py                  stdio (the default)
    python stdio_server.py --http PORT      Streamable HTTP on 127.0.0.1:PORT/mcp
    python stdio_server.py --sse PORT       SSE on 127.0.0.1:PORT/sse
    python stdio_server.py --crash          exits with code 3 before speaking
    python stdio_server.py --hang-at-start  never answers initialize
    python stdio_server.py --noisy          prints a line that is not JSON-RPC on stdout first

`MCP_TEST_CRASH=1` in the environment crashes it too, so a test can fix a server by changing only its entry's env;
`MCP_TEST_MARKS=DIR` makes `hang` leave files there when it starts and when it is cancelled (named with its
`tag` argument, so that a test waits for its own call's files).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("qwen-chat-test", log_level="WARNING")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged.

    A second line the CLI should not print."""
    return text


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def fail(message: str) -> str:
    """Always fails with the given message."""
    raise ToolError(message)  # a ToolError's message reaches the client; other exceptions are hidden


@server.tool()
async def hang(seconds: float = 3600, tag: str = "") -> str:
    """Sleep for a long time (to test timeouts and cancellation)."""
    _mark(f"hang-started{tag}")
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        _mark(f"hang-cancelled{tag}")  # the client's cancellation reached the server
        raise
    return "woke up"


@server.tool()
def exit_now(code: int) -> str:
    """End the server process at once, as a crash would."""
    print(f"test server: exiting with code {code}", file=sys.stderr, flush=True)
    os._exit(code)


@server.tool()
def env_value(name: str) -> str:
    """The server's own value of an environment variable."""
    return os.environ.get(name, "<unset>")


@server.tool()
def big(size: int) -> str:
    """A long answer: size times the letter x."""
    return "x" * size


@server.tool()
def header(name: str, ctx: Context) -> str:
    """An HTTP request header as the server received it (HTTP transports only)."""
    request = ctx.request_context.request
    headers = getattr(request, "headers", None)
    return "<no request>" if headers is None else headers.get(name, "<absent>")


@server.tool()
async def grow(name: str, ctx: Context) -> str:
    """Add a tool `name` (it answers its own name), and tell the client that the tool list changed."""

    def added() -> str:
        return name

    server.add_tool(added, name=name, description="A tool added while the server runs.")
    await ctx.notify_tools_changed()
    return f"added {name}"


def _mark(name: str) -> None:
    """Leave a file in $MCP_TEST_MARKS (when set), so that a test can see what happened inside the server."""
    folder = os.environ.get("MCP_TEST_MARKS")
    if folder:
        (Path(folder) / name).write_text(str(os.getpid()), encoding="utf-8")


def _port(flag: str) -> int:
    return int(sys.argv[sys.argv.index(flag) + 1])


def main() -> None:
    if "--crash" in sys.argv or os.environ.get("MCP_TEST_CRASH") == "1":
        print("test server: crashing on purpose", file=sys.stderr)
        sys.exit(3)
    if "--noisy" in sys.argv:  # a line on stdout that is not JSON-RPC, as a careless server prints
        print("hello from a careless server", flush=True)
    if "--hang-at-start" in sys.argv:
        time.sleep(3600)
    if "--http" in sys.argv:
        server.run("streamable-http", host="127.0.0.1", port=_port("--http"))
    elif "--sse" in sys.argv:
        server.run("sse", host="127.0.0.1", port=_port("--sse"))
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
