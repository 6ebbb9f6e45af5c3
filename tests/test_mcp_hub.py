"""The MCP hub against real servers (tests/mcp_servers/stdio_server.py) over stdio, Streamable HTTP and SSE on
127.0.0.1, through the real SDK: tools, calls, errors, timeouts, cancellation, crashes, restarts, environment
isolation and clean shutdown."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from qwen_chat.config.mcp_config import ServerEntry
from qwen_chat.tools.mcp_hub import McpHub, Reloaded, ServerState, ToolSpec, validate_arguments

from helpers import wait_until

SERVER = str(Path(__file__).parent / "mcp_servers" / "stdio_server.py")
SECRET = "tok-1234"
TOOLS = {"echo", "add", "fail", "hang", "exit_now", "env_value", "big", "header", "grow"}


def stdio(name: str, *args: str, **fields: object) -> ServerEntry:
    return ServerEntry(name, "stdio", command=sys.executable, args=(SERVER, *args), **fields)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def state(hub: McpHub, name: str) -> ServerState:
    return next(s for s in hub.states() if s.name == name)


def settled(hub: McpHub, name: str, timeout: float = 20) -> ServerState:
    return wait_until(lambda: (s := state(hub, name)).status != "connecting" and s, timeout=timeout,
                      what=f"{name} to connect or fail")


def network_server(flag: str, log: Path) -> Iterator[int]:
    """The test server on a loopback port (`--http` or `--sse`), running until the module is done."""
    port = free_port()
    with open(log, "ab") as err:
        proc = subprocess.Popen([sys.executable, SERVER, flag, str(port)], stdout=subprocess.DEVNULL, stderr=err)

    def listening() -> bool:
        assert proc.poll() is None, f"the {flag} server exited; see {log}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    try:
        wait_until(listening, timeout=30, what=f"the {flag} test server", interval=0.05)
        yield port
    finally:
        proc.kill()  # not terminate: uvicorn would wait for the clients' open streams to end
        proc.wait(10)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mcp")


@pytest.fixture(scope="module")
def http_port(folder: Path) -> Iterator[int]:
    yield from network_server("--http", folder / "http-server.log")


@pytest.fixture(scope="module")
def sse_port(folder: Path) -> Iterator[int]:
    yield from network_server("--sse", folder / "sse-server.log")


@pytest.fixture(scope="module")
def marks(folder: Path) -> Path:
    path = folder / "marks"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def hub(folder: Path, marks: Path, http_port: int, sse_port: int) -> Iterator[McpHub]:
    """One server per transport. QWEN_MCP_TEST_LEAK is in our environment and in no entry: no server may see it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QWEN_MCP_TEST_SECRET", SECRET)
        patch.setenv("QWEN_MCP_TEST_LEAK", "leaked")
        hub = McpHub([
            stdio("main", env={"MCP_TEST_MARKS": str(marks), "SEEN": "yes", "FROM_ENV": "${env:QWEN_MCP_TEST_SECRET}"}),
            ServerEntry("web", "http", url=f"http://127.0.0.1:{http_port}/mcp",
                        headers={"X-Plain": "literal", "X-Secret": "Bearer ${env:QWEN_MCP_TEST_SECRET}"}),
            ServerEntry("events", "sse", url=f"http://127.0.0.1:{sse_port}/sse"),
        ], call_timeout=10, connect_timeout=20, log_path=folder / "mcp-servers.log")
        hub.start()
        assert hub.wait_ready(30)
    try:
        yield hub
    finally:
        hub.close()


# --- listing -----------------------------------------------------------------------------------------------------

def test_every_transport_connects_and_lists_its_tools(hub: McpHub) -> None:
    assert [(s.name, s.status, s.error) for s in hub.states()] == \
        [("main", "up", None), ("web", "up", None), ("events", "up", None)]
    for name in ("main", "web", "events"):
        assert {tool.name for tool in state(hub, name).tools} == TOOLS
    assert len(hub.tools()) == 3 * len(TOOLS)
    add = next(t for t in hub.tools() if t.server == "web" and t.name == "add")
    assert add.input_schema["required"] == ["a", "b"]
    assert add.input_schema["properties"]["a"]["type"] == "integer"
    assert add.function() == {"type": "function", "function": {
        "name": "add", "description": "Add two integers.", "parameters": add.input_schema}}


def test_shared_tool_names_resolve_only_in_their_qualified_form(hub: McpHub) -> None:
    assert hub.find("echo") is None  # three servers offer it: a plain name would be a guess
    spec = hub.find("web__echo")
    assert spec is not None and (spec.server, spec.name) == ("web", "echo")
    names = [f["function"]["name"] for f in hub.functions()]
    assert "main__echo" in names and "events__big" in names and "echo" not in names
    assert all(hub.find(name) is not None for name in names)


def test_a_plain_name_resolves_when_one_server_offers_it() -> None:
    hub = McpHub([])
    spec = ToolSpec("only", "lookup", "", {"type": "object"})
    hub._states["only"] = ServerState("only", "up", None, (spec,))  # a state as the loop would publish it
    assert hub.find("lookup") == spec and hub.find("only__lookup") == spec
    assert hub.functions()[0]["function"]["name"] == "lookup"


# --- calls -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("server", ["main", "web", "events"])
def test_calls_answer_over_each_transport(hub: McpHub, server: str) -> None:
    assert hub.call(server, "echo", {"text": "héllo\nworld"}).text == "héllo\nworld"
    result = hub.call(server, "add", {"a": 2, "b": 40})
    assert (result.text, result.is_error, result.truncated) == ("42", False, False)


def test_headers_reach_the_http_server_with_their_secrets_filled_in(hub: McpHub) -> None:
    assert hub.call("web", "header", {"name": "x-plain"}).text == "literal"
    assert hub.call("web", "header", {"name": "x-secret"}).text == f"Bearer {SECRET}"


def test_a_failing_tool_is_an_error_result(hub: McpHub) -> None:
    result = hub.call("main", "fail", {"message": "the disk is on fire"})
    assert result.is_error and "the disk is on fire" in result.text


def test_bad_arguments_are_the_servers_error_result(hub: McpHub) -> None:
    result = hub.call("main", "add", {"a": "many"})
    assert result.is_error and "validation error" in result.text


def test_unknown_servers_and_tools_are_error_results(hub: McpHub) -> None:
    assert hub.call("nowhere", "echo", {}).text == "the MCP server 'nowhere' does not exist"
    result = hub.call("main", "teleport", {})
    assert result.is_error and result.text == "the MCP server 'main' has no tool named 'teleport'"


def test_a_long_answer_is_cut_to_the_limit(hub: McpHub) -> None:
    result = hub.call("main", "big", {"size": hub.result_limit + 5000})
    assert result.truncated and not result.is_error
    assert result.text.startswith("x" * hub.result_limit + "\n[... cut: ")
    assert hub.call("main", "big", {"size": 10}) == type(result)("x" * 10, is_error=False, truncated=False)


def test_a_hanging_call_times_out_is_cancelled_and_the_hub_keeps_serving(hub: McpHub, marks: Path) -> None:
    started = time.monotonic()
    result = hub.call("main", "hang", {"tag": "-timeout"}, timeout=1)
    assert result.is_error and result.text == "main.hang: timed out after 1 s; the call was cancelled"
    assert time.monotonic() - started < 5
    assert (marks / "hang-started-timeout").exists()
    wait_until(lambda: (marks / "hang-cancelled-timeout").exists(), timeout=10, what="the server to see the cancel")
    assert hub.call("main", "echo", {"text": "still here"}).text == "still here"


def test_other_calls_go_on_while_one_hangs(hub: McpHub) -> None:
    hanging = hub.call_async("main", "hang", {"seconds": 30, "tag": "-meanwhile"})
    try:
        started = time.monotonic()
        assert hub.call("main", "echo", {"text": "a"}).text == "a"  # the same server, meanwhile
        assert hub.call("web", "echo", {"text": "b"}).text == "b"
        assert time.monotonic() - started < 5 and not hanging.done()
    finally:
        hanging.cancel()


def test_cancelling_the_future_cancels_the_call_on_the_server(hub: McpHub, marks: Path) -> None:
    future = hub.call_async("main", "hang", {"tag": "-future"})
    wait_until(lambda: (marks / "hang-started-future").exists(), timeout=10, what="the call to start")
    time.sleep(0.2)
    assert not (marks / "hang-cancelled-future").exists() and not future.done()
    assert future.cancel()
    wait_until(lambda: (marks / "hang-cancelled-future").exists(), timeout=10, what="the server to see the cancel")
    assert future.cancelled()
    assert hub.call("main", "add", {"a": 1, "b": 1}).text == "2"


# --- environment ------------------------------------------------------------------------------------------------

def test_a_stdio_server_sees_its_entrys_env_and_not_ours(hub: McpHub) -> None:
    def value(name: str) -> str:
        return hub.call("main", "env_value", {"name": name}).text

    assert value("QWEN_MCP_TEST_LEAK") == "<unset>"  # in our environment when it started, in no entry
    assert value("QWEN_MCP_TEST_SECRET") == "<unset>"  # only through the reference below
    assert value("SEEN") == "yes"
    assert value("FROM_ENV") == SECRET  # ${env:...} filled in from our environment
    assert value("PATH") not in ("", "<unset>")  # the SDK's safe defaults are passed on


def test_validate_arguments_checks_the_input_schema(hub: McpHub) -> None:
    spec = hub.find("main__add")
    assert spec is not None
    assert validate_arguments(spec, {"a": 1, "b": 2}) is None
    assert validate_arguments(spec, {"a": "one", "b": 2}) == "invalid arguments for add: a: 'one' is not of type " \
                                                             "'integer'"
    assert validate_arguments(spec, {"a": 1}) == "invalid arguments for add: 'b' is a required property"
    assert validate_arguments(spec, [1, 2]) == "add: the arguments must be a JSON object, not list"
    broken = ToolSpec("s", "t", "", {"type": "no-such-type"})
    assert validate_arguments(broken, {"x": 1}) is None  # the schema's fault: the server judges


def test_a_tool_added_while_the_server_runs_is_listed_and_announced(tmp_path: Path) -> None:
    changes: list[int] = []
    hub = McpHub([stdio("growing")], on_change=lambda: changes.append(1), log_path=tmp_path / "servers.log")
    try:
        hub.start()
        assert settled(hub, "growing").status == "up" and hub.find("sprout") is None
        seen = len(changes)
        assert hub.call("growing", "grow", {"name": "sprout"}).text == "added sprout"
        wait_until(lambda: hub.find("sprout"), timeout=10, what="the new tool to be listed")
        assert len(changes) > seen
        assert hub.call("growing", "sprout", {}).text == "sprout"
    finally:
        hub.close()


# --- servers that fail ------------------------------------------------------------------------------------------

def test_servers_that_cannot_start_are_down_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QWEN_MCP_NOT_SET", raising=False)
    changes: list[float] = []
    log = tmp_path / "servers.log"
    nobody = f"http://127.0.0.1:{free_port()}/mcp"
    hub = McpHub([
        stdio("crashes", env={"MCP_TEST_CRASH": "1"}),
        ServerEntry("missing", "stdio", command="qwen-chat-no-such-mcp-server"),
        stdio("needs-secret", env={"TOKEN": "${env:QWEN_MCP_NOT_SET}"}),
        ServerEntry("refused", "http", url=nobody),
        stdio("off", disabled=True),
    ], on_change=lambda: changes.append(time.monotonic()), connect_timeout=20, log_path=log)
    try:
        hub.start()
        assert hub.wait_ready(30)
        reasons = {s.name: (s.status, s.error) for s in hub.states()}
        assert reasons == {
            "crashes": ("down", "the server exited with code 3: test server: crashing on purpose"),
            "missing": ("down", "command not found: qwen-chat-no-such-mcp-server"),
            "needs-secret": ("down", "env.TOKEN: ${env:QWEN_MCP_NOT_SET} is not set in qwen-chat's environment"),
            "refused": ("down", reasons["refused"][1]),
            "off": ("disabled", None),
        }
        assert reasons["refused"][1].startswith(f"cannot connect to {nobody}: connection refused")
        assert hub.tools() == [] and changes
        assert "crashes: test server: crashing on purpose" in log.read_text(encoding="utf-8")
        assert hub.call("off", "echo", {"text": "x"}).text == "the MCP server 'off' is disabled in mcp.json"

        hub.restart("crashes", stdio("crashes"))  # the entry fixed: no crash variable
        assert settled(hub, "crashes").status == "up"
        assert hub.call("crashes", "echo", {"text": "fixed"}).text == "fixed"
    finally:
        hub.close()


def test_a_server_that_never_answers_times_out_without_holding_up_the_others(tmp_path: Path) -> None:
    # 6 s: a Python server importing the MCP SDK took over 1.5 s to start on a loaded 2-core machine (two copies
    # of the suite at once), and "quick" was timed out too; the quick one is still up and answering long before
    hub = McpHub([stdio("silent", "--hang-at-start"), stdio("quick")], connect_timeout=6,
                 log_path=tmp_path / "servers.log")
    try:
        hub.start()
        assert settled(hub, "quick").status == "up"
        assert hub.call("quick", "echo", {"text": "meanwhile"}).text == "meanwhile"
        silent = settled(hub, "silent")
        assert (silent.status, silent.error) == ("down", "timed out after 6 s waiting for the server to start")
    finally:
        hub.close()


def test_a_server_that_dies_is_down_and_restart_brings_it_back(tmp_path: Path) -> None:
    hub = McpHub([stdio("fragile")], log_path=tmp_path / "servers.log")
    try:
        hub.start()
        assert settled(hub, "fragile").status == "up"
        result = hub.call("fragile", "exit_now", {"code": 5})
        assert result.is_error and "closed the connection" in result.text
        down = wait_until(lambda: (s := state(hub, "fragile")).status == "down" and s, timeout=10, what="down")
        assert down.error == "the server exited with code 5: test server: exiting with code 5"
        assert hub.tools() == []
        hub.restart("fragile")
        assert hub.call("fragile", "add", {"a": 2, "b": 2}).text == "4"  # waits for the new connection
        assert state(hub, "fragile").status == "up"
    finally:
        hub.close()


def test_an_http_server_that_goes_away_is_down_and_comes_back_with_restart(tmp_path: Path) -> None:
    servers = network_server("--http", tmp_path / "http.log")
    port = next(servers)
    hub = McpHub([ServerEntry("remote", "http", url=f"http://127.0.0.1:{port}/mcp")], log_path=tmp_path / "s.log")
    try:
        hub.start()
        assert settled(hub, "remote").status == "up"
        servers.close()  # the server process is killed
        result = hub.call("remote", "echo", {"text": "anyone?"})
        assert result.is_error
        down = wait_until(lambda: (s := state(hub, "remote")).status == "down" and s, timeout=10, what="down")
        url = f"http://127.0.0.1:{port}/mcp"
        assert down.error is not None and down.error.startswith((f"lost the connection to {url}",
                                                                 f"cannot connect to {url}"))
        hub.restart("remote")
        again = settled(hub, "remote")  # still nobody there: down again, with the reason
        assert again.status == "down" and again.error is not None
        assert again.error.startswith(f"cannot connect to {url}: connection refused")
    finally:
        hub.close()


def test_reload_starts_new_servers_and_stops_removed_ones(tmp_path: Path) -> None:
    hub = McpHub([stdio("old")], log_path=tmp_path / "servers.log")
    try:
        hub.start()
        assert settled(hub, "old").status == "up"
        done = hub.reload([stdio("new"), ServerEntry("later", "stdio", command="x", disabled=True)])
        assert done == Reloaded(added=("new", "later"), changed=(), removed=("old",))
        assert settled(hub, "new").status == "up"
        assert [(s.name, s.status) for s in hub.states()] == [("new", "up"), ("later", "disabled")]
        assert hub.call("old", "echo", {"text": "x"}).text == "the MCP server 'old' does not exist"
    finally:
        hub.close()


NOISY_SESSION = """
import sys
from pathlib import Path
from qwen_chat.config.mcp_config import ServerEntry
from qwen_chat.tools.mcp_hub import McpHub
server, log = sys.argv[1], Path(sys.argv[2])
hub = McpHub([ServerEntry(name, "stdio", command=sys.executable, args=(server, flag))
              for name, flag in (("noisy", "--noisy"), ("crashes", "--crash"))], log_path=log)
hub.start()
hub.wait_ready(30)
print(hub.call("noisy", "echo", {"text": "fine"}).text, [state.status for state in hub.states()])
hub.close()
"""


def test_nothing_reaches_our_terminal(tmp_path: Path) -> None:
    """A server's stderr goes to the log file, and the SDK's complaint about a line of non-JSON on a server's
    stdout to our logger: the terminal (the TUI's screen) gets neither, even where logging was never set up."""
    log = tmp_path / "servers.log"
    done = subprocess.run([sys.executable, "-c", NOISY_SESSION, SERVER, str(log)], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "fine ['up', 'down']\n", "")
    assert "crashes: test server: crashing on purpose" in log.read_text(encoding="utf-8")


def test_close_ends_every_server_process_and_is_idempotent(tmp_path: Path) -> None:
    ours = psutil.Process()
    before = {child.pid for child in ours.children(recursive=True)}
    hub = McpHub([stdio("one"), stdio("two"), stdio("starting", "--hang-at-start")], connect_timeout=60,
                 log_path=tmp_path / "servers.log")
    hub.start()
    settled(hub, "one"), settled(hub, "two")
    spawned = {child.pid for child in ours.children(recursive=True)} - before
    assert len(spawned) >= 3  # the two servers and the one still starting
    started = time.monotonic()
    hub.close()
    assert time.monotonic() - started < 10  # the one still starting is cancelled, not waited for
    assert [pid for pid in spawned if psutil.pid_exists(pid)] == []  # ended and reaped: no zombie either
    hub.close()
    assert hub.call("one", "echo", {"text": "x"}).is_error
    assert {s.status for s in hub.states()} == {"down"}
