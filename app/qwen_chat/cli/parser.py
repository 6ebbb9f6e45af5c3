"""The `qwen-chat` arguments. Imports nothing heavy: `--help` and `--version` answer at once.

The options shared by the chat and the subcommands (--model, --ctx, --db, --endpoint, --api-key,
--remote-model) are accepted on either side of the subcommand: `qwen-chat --model M ask "q"` and
`qwen-chat ask --model M "q"` are the same. The subcommand's copy has SUPPRESS as its default, so leaving it
out there keeps what was given before the subcommand (argparse copies a subparser's defaults over the
top-level values otherwise).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from qwen_chat import __version__

_MODEL_HELP = ("a .gguf path (for a split model its first shard ...-00001-of-0000N.gguf), a catalog id (qwen3-8b, "
               "qwen3-8b:Q5_K_M) or a downloaded file's name; default: the last one")


def _model_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--model", "-m", metavar="MODEL", default=default, help=_MODEL_HELP)
    _ctx_option(parser, default)


def _ctx_option(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--ctx", type=int, metavar="N", default=default,
                        help="context size in tokens (default: the model's own, as far as memory allows)")


def _endpoint_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--endpoint", metavar="URL", default=default,
                        help="chat through an OpenAI-compatible server instead (llama-server, vLLM, SGLang), "
                             "e.g. http://host:8000/v1, or the name of a saved one")
    parser.add_argument("--api-key", metavar="KEY", default=default,
                        help="the endpoint's API key; stored in the system keyring for next time, never in a file")
    parser.add_argument("--remote-model", metavar="NAME", default=default,
                        help="which of the endpoint's models (default: the first)")


def _db_option(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--db", type=Path, metavar="PATH", default=default,
                        help="conversations database (default: in your data folder; env QWEN_CHAT_DB)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="qwen-chat",
        description="Chat with Qwen3 models locally, offline, in your terminal.",
        epilog="Keys in the app: Enter send, Esc stop, Ctrl+T thinking on/off, Ctrl+N new chat, "
               "F2 rename, Ctrl+D delete, Ctrl+P command palette, Ctrl+Q quit. "
               "Exit status: 0 done, 1 failed (the message says why), 2 wrong usage, 130 interrupted (Ctrl-C).",
    )
    top.add_argument("--version", action="version", version=f"qwen-chat {__version__}")
    _model_options(top, None)
    _endpoint_options(top, None)
    top.add_argument("--save-endpoint", metavar="NAME",
                     help="save --endpoint (and --remote-model) under NAME in settings.toml; later: --endpoint NAME")
    _db_option(top, None)
    _add_commands(top.add_subparsers(dest="command", title="commands (without one, the chat opens)"))
    return top


def _add_commands(commands: argparse._SubParsersAction) -> None:
    hidden = argparse.SUPPRESS  # see the module docstring
    commands.add_parser("models", help="the Qwen3 catalog with a verdict per quant for this machine")
    plan = commands.add_parser("plan", help="how MODEL[:QUANT] (or a .gguf path) would run here")
    plan.add_argument("model", metavar="MODEL[:QUANT]")
    _ctx_option(plan, hidden)
    plan.add_argument("--exact", action="store_true",
                      help="read the files' GGUF headers from the hub (a few MB) for exact tensor sizes")
    doctor = commands.add_parser("doctor", help="hardware, engine build, paths and versions")
    _db_option(doctor, hidden)
    calibrate = commands.add_parser("calibrate", help="measure this machine's decode and prompt speed (~20 s) on a "
                                                      "GGUF, for the tok/s that models and plan show")
    calibrate.add_argument("gguf", nargs="?", type=Path, metavar="MODEL.gguf",
                           help="the model to probe with (default: the last one used; any small GGUF will do)")
    calibrate.add_argument("--gpu", action="store_true", help="also probe with every layer on the GPU")
    pull = commands.add_parser("pull", help="download MODEL[:QUANT] from Hugging Face (resumes; verifies sha256)")
    pull.add_argument("model", metavar="MODEL[:QUANT]")
    pull.add_argument("--keep-shards", action="store_true",
                      help="keep a split model's shards after merging (by default pull deletes the shards it "
                           "downloaded, once the merged file is verified)")
    merge = commands.add_parser("merge", help="join a split GGUF (...-00001-of-0000N.gguf) into one file; the "
                                              "shards are kept unless --delete-shards")
    merge.add_argument("first_shard", type=Path)
    merge.add_argument("out", type=Path, nargs="?")
    merge.add_argument("--delete-shards", action="store_true",
                       help="delete the shards once the merged file is written, verified and in place")
    merge.add_argument("--keep-shards", action="store_true",
                       help="accepted for older scripts and does nothing: merge keeps the shards by default")
    commands.add_parser("login", help="store a Hugging Face token in the system keyring")
    _history_commands(commands, hidden)
    ask = commands.add_parser("ask", help="answer one question on stdout (for scripts and pipes)")
    ask.add_argument("question", nargs="?",
                     help="the question; read from stdin when omitted or '-'; text piped into stdin is added "
                          "after it (cat notes.md | qwen-chat ask \"summarise this\")")
    ask.add_argument("--no-think", action="store_true", help="answer without thinking (hybrid models)")
    ask.add_argument("--show-thinking", action="store_true", help="stream the thinking to stderr")
    ask.add_argument("--allow-tool", action="append", default=[], metavar="NAME",
                     help="let the model run this MCP tool without asking (repeatable); without it, or a rule in "
                          "settings.toml, a call is asked about on the terminal, or refused when there is none")
    ask.add_argument("--allow-server", action="append", default=[], metavar="NAME",
                     help="let the model run every tool of this MCP server without asking (repeatable)")
    ask.add_argument("--no-tools", action="store_true", help="offer the model no tools, even with servers in mcp.json")
    _model_options(ask, hidden)
    _endpoint_options(ask, hidden)
    _mcp_commands(commands)


def _history_commands(commands: argparse._SubParsersAction, hidden: str) -> None:
    search = commands.add_parser("search", help="full-text search across all conversations")
    search.add_argument("query", nargs="+")
    _db_option(search, hidden)
    export = commands.add_parser("export", help="a conversation as Markdown or JSON (default: the latest)")
    export.add_argument("conversation", nargs="?", type=int, help="conversation id (see `search`)")
    export.add_argument("--format", choices=("md", "json"), default="md")
    export.add_argument("--thinking", action="store_true", help="include the model's thinking")
    export.add_argument("-o", "--output", type=Path, help="write to a file instead of stdout")
    _db_option(export, hidden)
    imp = commands.add_parser("import", help="import a conversation exported as JSON")
    imp.add_argument("file", type=Path)
    _db_option(imp, hidden)
    salvage = commands.add_parser("salvage", help="copy what a damaged conversations database still holds into "
                                                  "a new file beside it (the original is left as it is)")
    _db_option(salvage, hidden)


def _mcp_commands(commands: argparse._SubParsersAction) -> None:
    mcp = commands.add_parser("mcp", help="the MCP tool servers in mcp.json: list, add, remove, test")
    actions = mcp.add_subparsers(dest="mcp_command", metavar="{list,add,remove,test}", required=True)
    actions.add_parser("list", help="each server, its transport and command or URL (secrets masked), and the "
                                    "problems found in the file")
    add = actions.add_parser(
        "add", help="add a server started by a command (stdio) or reached at a URL",
        usage="qwen-chat mcp add NAME [--env K=V]... [--cwd DIR] -- COMMAND [ARGS...]\n"
              "       qwen-chat mcp add NAME --url URL [--header K=V]... [--sse]",
        epilog="A secret is best written as ${env:NAME} (from qwen-chat's environment) or ${keyring:NAME} (the "
               "system keyring, service qwen-chat-mcp): the file then names it instead of holding it.")
    add.add_argument("name")
    # everything after NAME; mcp_command.py reads the options in it and the command after "--" (argparse alone
    # cannot take options between NAME and "--" together with a command list)
    add.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    mcp_add_options(add)
    remove = actions.add_parser("remove", help="remove a server from mcp.json")
    remove.add_argument("name")
    test = actions.add_parser("test", help="connect to the servers (or NAME only), show their tools; exit 1 if one "
                                           "is down")
    test.add_argument("name", nargs="?")
    test.add_argument("--timeout", type=float, default=20.0, metavar="S",
                      help="seconds each server has to start and answer (default 20)")


def mcp_add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", action="append", default=[], metavar="K=V",
                        help="an environment variable for a stdio server (repeatable)")
    parser.add_argument("--cwd", metavar="DIR", help="the folder a stdio server starts in")
    parser.add_argument("--url", help="the server's Streamable HTTP (or, with --sse, SSE) URL")
    parser.add_argument("--header", action="append", default=[], metavar="K=V",
                        help="an HTTP header sent to a URL server (repeatable)")
    parser.add_argument("--sse", action="store_true", help="the URL speaks the older SSE transport")
