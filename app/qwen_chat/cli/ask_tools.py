"""`qwen-chat ask` with the MCP servers of mcp.json: which servers, started for the one answer, and who approves
each call. The answer itself is ask.py's (the chat's own tool loop in a ChatSession, nothing kept).

A call runs only with an approval: a rule in settings.toml, `--allow-tool NAME` / `--allow-server NAME`, or the
user answering on the terminal (the question written to it and the answer read from it, /dev/tty, even when
stdin or stdout is a pipe). With no terminal and no rule the call is refused, the model is told, and stderr
says how to allow it.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from qwen_chat.config.mcp_config import ServerEntry
from qwen_chat.config.tool_settings import ToolSettings, load_tool_settings
from qwen_chat.session.events import ToolApprovalNeeded
from qwen_chat.session.tool_loop import STORE_LIMIT, Decision
from qwen_chat.system.printable import printable

if TYPE_CHECKING:
    from qwen_chat.tools.mcp_hub import McpHub

CHOICES: dict[str, Decision] = {"o": "once", "t": "tool", "s": "server", "d": "deny", "": "deny"}
Asker = Callable[[ToolApprovalNeeded], Decision | None]


@dataclasses.dataclass
class AskTools:
    entries: list[ServerEntry]
    allow_tools: tuple[str, ...] = ()  # tool names (any server) or server/tool
    allow_servers: tuple[str, ...] = ()

    def settings(self) -> ToolSettings:
        """The saved rules plus this run's --allow-tool / --allow-server."""
        saved = load_tool_settings()
        return dataclasses.replace(saved, allow_tools=saved.allow_tools + self.allow_tools,
                                   allow_servers=saved.allow_servers + self.allow_servers)

    def allows(self, server: str, tool: str) -> bool:
        """`--allow-tool NAME` allows NAME on whichever server has it (saved rules name server/tool)."""
        return self.settings().allows(server, tool) or tool in self.allow_tools


def open_hub(tools: AskTools, err: TextIO) -> McpHub:
    """The servers, started and waited for (at most their connect timeout); one that is down is said on `err`
    and its tools are not offered."""
    from qwen_chat.tools.mcp_hub import McpHub

    hub = McpHub(tools.entries, call_timeout=tools.settings().call_timeout, result_limit=STORE_LIMIT)
    hub.start()
    hub.wait_ready(hub.connect_timeout)
    for state in hub.states():
        if state.status == "down":
            err.write(f"qwen-chat: MCP server {state.name} is down ({state.error}); its tools are not offered\n")
    return hub


def decide(event: ToolApprovalNeeded, tools: AskTools, asker: Asker | None, err: TextIO) -> Decision:
    """A call runs with a rule or --allow-* option, else with the user's answer (on the terminal unless `asker`
    is given); with nobody to ask it is refused, and `err` says how to allow it."""
    call = event.call
    if tools.allows(event.server, call.name):
        return "once"
    decision = (asker or _terminal_asker)(event)
    if decision is None:
        err.write(f"qwen-chat: the model asked to run {call.name} on {event.server}; not run: there is no terminal "
                  f"to ask on. Allow it with --allow-tool {call.name} or --allow-server {event.server}.\n")
        return "deny"
    return decision


def _terminal_asker(event: ToolApprovalNeeded) -> Decision | None:
    """Ask on the terminal itself (the question and the answer both go through /dev/tty, so a pipe on stdin or
    stdout changes nothing); None when there is no terminal to ask on, or it hangs up while asking."""
    import json

    try:
        terminal = _open_terminal()
    except OSError:  # no controlling terminal (cron, CI, a service), or no /dev/tty at all
        return None
    arguments = json.dumps(event.call.arguments, ensure_ascii=False, indent=2)
    with terminal:
        try:
            terminal.write(f"\nThe model wants to run {printable(event.call.name)} on {printable(event.server)}:\n"
                           f"{printable(arguments)}\n"
                           "Allow [o]nce, always this [t]ool, always this [s]erver, or [d]eny? ")
            line = terminal.readline()
            if not line:  # end of input (Ctrl+D): no answer is no approval; end the prompt's line
                terminal.write("\n")
        except OSError:  # the terminal went away mid-question (its window closed): nobody is there to answer
            return None
    return CHOICES.get(line.strip().lower()[:1], "deny")


def _open_terminal() -> TextIO:
    """/dev/tty for reading and writing. Not `open("/dev/tty", "r+")`: text "r+" puts a BufferedRandom under it,
    which needs a seekable file, and a terminal is not one (io.UnsupportedOperation, itself an OSError, so it
    read as "no terminal"). Unbuffered bytes under a write-through text layer need no seeking: the question
    reaches the screen before the answer is read, and a read takes one typed line, never the next one's input."""
    raw = open("/dev/tty", "rb+", buffering=0)  # noqa: SIM115 - the TextIOWrapper owns and closes it
    try:
        return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", write_through=True)
    except BaseException:
        raw.close()
        raise
