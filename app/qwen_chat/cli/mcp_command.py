"""`qwen-chat mcp list|add|remove|test`: the MCP tool servers of mcp.json, from the command line.

Secrets are never printed: ${env:X} / ${keyring:X} references are shown as written, any other value of an env
variable or a header is masked. Exit status: 0 done, 1 failed (a server down, a file that cannot be edited, a
name that is not there), 2 wrong usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from qwen_chat.cli import output
from qwen_chat.cli.output import one_line
from qwen_chat.cli.parser import mcp_add_options, shared_options, unused_option
from qwen_chat.config.mcp_config import (
    McpConfigError,
    ServerEntry,
    add_server,
    entry_json,
    load_servers,
    mask_secrets,
    mcp_config_path,
    parse_entry,
    remove_server,
)

if TYPE_CHECKING:  # the tools layer loads the MCP SDK: only `test` needs it, and imports it when it runs
    from qwen_chat.tools.mcp_results import ServerState

USAGE = 2


def run_mcp(args: argparse.Namespace) -> int:
    path = mcp_config_path()
    try:
        if args.mcp_command == "list":
            return run_list(path)
        if args.mcp_command == "add":
            return run_add(args, path)
        if args.mcp_command == "remove":
            return run_remove(args.name, path)
        return run_test(args.name, args.timeout, path)
    except McpConfigError as exc:
        output.error(exc)
        return 1


# --- list -------------------------------------------------------------------------------------------------------

def run_list(path: Path) -> int:
    entries, problems = load_servers(path)
    output.show(f"MCP servers in {path}:" if entries else f"no MCP servers in {path}")
    width = max((len(one_line(entry.name)) for entry in entries), default=0)
    for entry in entries:
        output.show(f"  {one_line(entry.name):<{width}}  {entry.transport:<5}  {describe_entry(entry)}")
    for problem in problems:
        output.error(f"warning: {problem}")
    return 0


def describe_entry(entry: ServerEntry) -> str:
    """The command or URL and what goes with it, on one line, with secrets masked."""
    if entry.transport == "stdio":
        parts = [shlex.join([entry.command or "", *entry.args])]
        if entry.env:
            parts.append("env: " + ", ".join(f"{key}={mask_secrets(value)}" for key, value in entry.env.items()))
        if entry.cwd:
            parts.append(f"cwd: {entry.cwd}")
    else:
        parts = [entry.url or ""]
        if entry.headers:
            parts.append("headers: " + ", ".join(f"{key}: {mask_secrets(value)}"
                                                 for key, value in entry.headers.items()))
    if entry.disabled:
        parts.append("(disabled)")
    return one_line("  ".join(parts))


# --- add and remove ---------------------------------------------------------------------------------------------

def run_add(args: argparse.Namespace, path: Path) -> int:
    options, command = _split_rest(args.rest)
    if options:
        reparser = argparse.ArgumentParser(prog="qwen-chat mcp add NAME")
        mcp_add_options(reparser)
        shared_options(reparser, argparse.SUPPRESS, ())  # refused by name, as on the line before NAME
        reparser.parse_args(options, namespace=args)  # a wrong option exits 2 with argparse's message
        problem = unused_option(args, reparser)
        if problem is not None:
            reparser.error(problem)
    raw = _entry_json(args, command)
    if isinstance(raw, str):
        output.error(raw)
        return USAGE
    entry, problem = parse_entry(args.name, raw)
    if entry is None:
        output.error(problem)
        return USAGE
    existing, _ = load_servers(path)
    if any(server.name == entry.name for server in existing):
        output.error(f"there is already a server named {entry.name!r} in {path}; remove it first: "
                     f"qwen-chat mcp remove {shlex.quote(entry.name)}")
        return 1
    add_server(entry, path)
    output.show(f"added {one_line(entry.name)} ({entry.transport}: {describe_entry(entry)}) to {path}")
    return 0


def _split_rest(rest: Sequence[str]) -> tuple[list[str], list[str]]:
    """What followed NAME: the options, and the command after `--` (or, with no options, the words themselves:
    `add time uvx mcp-server-time` works too)."""
    words = list(rest)
    if "--" in words:
        cut = words.index("--")
        return words[:cut], words[cut + 1:]
    if words and not words[0].startswith("-"):
        return [], words
    return words, []


def _entry_json(args: argparse.Namespace, command: list[str]) -> dict[str, object] | str:
    """The entry as mcp.json will hold it, or what is wrong with the arguments."""
    if bool(command) == bool(args.url):
        return "give either a command to start (after --) or --url, e.g. qwen-chat mcp add time -- uvx " \
               "mcp-server-time, or qwen-chat mcp add docs --url https://example.com/mcp"
    pairs = _pairs(args.env, "--env") if command else _pairs(args.header, "--header")
    if isinstance(pairs, str):
        return pairs
    if command:
        if args.header or args.sse:
            return "--header and --sse are for --url servers"
        return entry_json(ServerEntry(args.name, "stdio", command=command[0], args=tuple(command[1:]), env=pairs,
                                      cwd=args.cwd))
    if args.env or args.cwd:
        return "--env and --cwd are for servers started by a command"
    return entry_json(ServerEntry(args.name, "sse" if args.sse else "http", url=args.url, headers=pairs))


def _pairs(items: Sequence[str], flag: str) -> dict[str, str] | str:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            return f"{flag} takes KEY=VALUE, not {item!r}"
        pairs[key.strip()] = value
    return pairs


def run_remove(name: str, path: Path) -> int:
    if not remove_server(name, path):
        output.error(f"there is no server named {name!r} in {path}")
        return 1
    output.show(f"removed {one_line(name)} from {path}")
    return 0


# --- test -------------------------------------------------------------------------------------------------------

def run_test(name: str | None, timeout: float, path: Path) -> int:
    """Connect to each server (or `name` only, even when it is disabled: asking for it by name is the point),
    print its state and its tools; 1 when one of them is down."""
    entries, problems = load_servers(path)
    for problem in problems:
        output.error(f"warning: {problem}")
    if name is not None:
        entries = [dataclasses.replace(entry, disabled=False) for entry in entries if entry.name == name]
        if not entries:
            output.error(f"there is no server named {name!r} in {path}")
            return 1
    if not entries:
        output.show(f"no MCP servers in {path}")
        return 0
    from qwen_chat.tools.mcp_hub import McpHub

    hub = McpHub(entries, connect_timeout=timeout)
    try:
        hub.start()
        hub.wait_ready(timeout + 10)
        states = hub.states()
    finally:
        hub.close()
    for state in states:
        _show_state(state)
    failed = [state for state in states if state.status not in ("up", "disabled")]
    if any(entry.transport == "stdio" and entry.name in {s.name for s in failed} for entry in entries):
        output.note(f"what the servers wrote on stderr is in {hub.log_path}")
    return 1 if failed else 0


def _show_state(state: ServerState) -> None:
    if state.status == "up":
        output.show(f"{one_line(state.name)}: up, {len(state.tools)} tool{'s' if len(state.tools) != 1 else ''}")
    else:
        output.show(f"{one_line(state.name)}: {state.status}" + (f": {one_line(state.error)}" if state.error else ""))
    width = max((len(one_line(tool.name)) for tool in state.tools), default=0)
    for tool in state.tools:
        summary = next((line.strip() for line in tool.description.splitlines() if line.strip()), "")
        output.show(f"  {one_line(tool.name):<{width}}  {one_line(summary)}".rstrip())
