"""The `qwen-chat` arguments. Imports nothing heavy: `--help` and `--version` answer at once.

The options shared by the chat and the subcommands (--model, --ctx, --db, --endpoint, --api-key,
--remote-model, --save-endpoint, --seed, --threads) are accepted on either side of every subcommand:
`qwen-chat --model M ask "q"` and `qwen-chat ask --model M "q"` are the same. Where one means nothing to a
subcommand (`--db` to `ask`, which keeps no history) it is refused, on both sides alike, rather than ignored:
USED_BY says which subcommands use which. The subcommand's copy has SUPPRESS as its default, so leaving it out
there keeps what was given before the subcommand (argparse copies a subparser's defaults over the top-level
values otherwise).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from qwen_chat import __version__

_MODEL_HELP = ("a .gguf path (for a split model its first shard ...-00001-of-0000N.gguf), a catalog id (qwen3-8b, "
               "qwen3-8b:Q5_K_M) or a downloaded file's name; default: the last one")


SHARED = ("model", "ctx", "endpoint", "api_key", "remote_model", "save_endpoint", "db", "seed",  # argparse dests
          "threads")
# The subcommands each shared option means something to; the chat (no subcommand) takes them all. A subcommand
# not named here takes none of them (models, pull, merge, login, mcp).
USED_BY: dict[str, tuple[str, ...]] = {
    "ask": ("model", "ctx", "endpoint", "api_key", "remote_model", "save_endpoint", "seed", "threads"),  # no history
    "plan": ("ctx", "threads"),  # its model is its argument
    "calibrate": ("model",),  # the model to probe with when no MODEL.gguf is given
    "doctor": ("db", "threads"),  # it shows the database's path and the thread count
    "serve": ("model", "ctx", "api_key", "seed", "threads"),  # --api-key: the key clients must send
    **{command: ("db",) for command in ("search", "export", "import", "salvage")},
}
_ENDPOINT_ONLY = ("api_key", "remote_model", "save_endpoint")
_LOCAL_ONLY = ("model", "ctx", "threads")


def shared_options(parser: argparse.ArgumentParser, default: Any, shown: tuple[str, ...] = SHARED) -> None:
    """Add the shared options; those not in `shown` are accepted (to be refused by name) but not in --help."""
    def helped(dest: str, text: str) -> str:
        return text if dest in shown else argparse.SUPPRESS

    parser.add_argument("--model", "-m", metavar="MODEL", default=default, help=helped("model", _MODEL_HELP))
    parser.add_argument("--ctx", type=int, metavar="N", default=default, help=helped(
        "ctx", "context size in tokens (default: the model's own, as far as memory allows)"))
    parser.add_argument("--endpoint", metavar="URL", default=default, help=helped(
        "endpoint", "chat through an OpenAI-compatible server instead (llama-server, vLLM, SGLang), "
                    "e.g. http://host:8000/v1, or the name of a saved one"))
    parser.add_argument("--api-key", metavar="KEY", default=default, help=helped(
        "api_key", "the endpoint's API key; stored in the system keyring for next time, never in a file"))
    parser.add_argument("--remote-model", metavar="NAME", default=default, help=helped(
        "remote_model", "which of the endpoint's models (default: the first)"))
    parser.add_argument("--save-endpoint", metavar="NAME", default=default, help=helped(
        "save_endpoint", "save --endpoint (and --remote-model) under NAME in settings.toml; later: --endpoint NAME"))
    parser.add_argument("--db", type=Path, metavar="PATH", default=default, help=helped(
        "db", "conversations database (default: in your data folder; env QWEN_CHAT_DB)"))
    parser.add_argument("--seed", type=_seed, metavar="N", default=default, help=helped(
        "seed", "every answer's sampling seed, 0 to 2**32-1: the same seed and question give the same answer "
                "(default: the preset's or settings.toml's [chat] seed, else random)"))
    parser.add_argument("--threads", type=_threads, metavar="N", default=default, help=helped(
        "threads", "llama.cpp's threads for decoding and prompts (default: settings.toml's [engine] threads, "
                   "else the physical cores)"))


def _seed(text: str) -> int:
    from qwen_chat.qwen3.sampling import MAX_SEED  # here, not at the top: --help and --version import nothing

    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to {MAX_SEED} (got {text!r})")
    return value


def _threads(text: str) -> int:
    from qwen_chat.config.engine_settings import MAX_THREADS

    if not text.strip().isdigit() or not 1 <= int(text) <= MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_THREADS} (got {text!r})")
    return int(text)


def _flag(parser: argparse.ArgumentParser, dest: str) -> str:
    return next(a.option_strings[0] for a in parser._actions if a.dest == dest and a.option_strings)


def _listed(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else items[0]


def _users(dest: str) -> str:
    return _listed(["the chat", *(f"`{command}`" for command, dests in USED_BY.items() if dest in dests)])


def unused_option(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str | None:
    """Why a shared option given (on either side) means nothing here, or None when each one given is used."""
    given = [dest for dest in SHARED if getattr(args, dest, None) is not None]
    if args.command is not None:
        unused = [dest for dest in given if dest not in USED_BY.get(args.command, ())]
        if len(unused) == 1:
            return f"{_flag(parser, unused[0])} means nothing to `qwen-chat {args.command}`; it is for " \
                   f"{_users(unused[0])}"
        if unused:
            return f"{_listed([_flag(parser, d) for d in unused])} mean nothing to `qwen-chat {args.command}`"
    needs_endpoint = [dest for dest in given if dest in _ENDPOINT_ONLY]
    if args.endpoint is None and needs_endpoint and args.command != "serve":
        return f"{_flag(parser, needs_endpoint[0])} goes with --endpoint URL (a server); without one it does nothing"
    local = [dest for dest in given if dest in _LOCAL_ONLY]
    if args.endpoint is not None and local:
        return f"{_flag(parser, local[0])} is for a local model and --endpoint for a server: give one of them"
    return None


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments, or exit 2 with argparse's usage and one line saying what is wrong."""
    top = parser()
    args = top.parse_args(argv)
    problem = unused_option(args, top)
    if problem is not None:
        top.error(problem)
    return args


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="qwen-chat",
        description="Chat with Qwen3 models locally, offline, in your terminal.",
        epilog="Keys in the app: Enter send, Esc stop, Ctrl+T thinking on/off, Ctrl+N new chat, "
               "F2 rename, Ctrl+D delete, Ctrl+P command palette, Ctrl+Q quit. "
               "Exit status: 0 done, 1 failed (the message says why), 2 wrong usage, 130 interrupted (Ctrl-C).",
    )
    top.add_argument("--version", action="version", version=f"qwen-chat {__version__}")
    shared_options(top, None)
    commands = top.add_subparsers(dest="command", title="commands (without one, the chat opens)")
    _add_commands(commands)
    _serve_command(commands)
    _add_shared_copies(top)
    _serve_key_help(top)
    return top


def _add_shared_copies(top: argparse.ArgumentParser) -> None:
    """Every subcommand (and each mcp action) takes the shared options too; see the module docstring."""
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    for command, sub in commands.choices.items():
        shared_options(sub, argparse.SUPPRESS, USED_BY.get(command, ()))
        for action in (a for a in sub._actions if isinstance(a, argparse._SubParsersAction)):
            for leaf in action.choices.values():
                shared_options(leaf, argparse.SUPPRESS, USED_BY.get(command, ()))


def _add_commands(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="the Qwen3 catalog with a verdict per quant for this machine")
    models.add_argument("--fits", action="store_true", help="only the models and quants that fit this machine")
    plan = commands.add_parser("plan", help="how MODEL[:QUANT] (or a .gguf path) would run here")
    plan.add_argument("ref", metavar="MODEL[:QUANT]")  # not dest "model": that is --model's
    plan.add_argument("--exact", action="store_true",
                      help="read the files' GGUF headers from the hub (a few MB) for exact tensor sizes")
    commands.add_parser("doctor", help="hardware, engine build, paths and versions")
    calibrate = commands.add_parser("calibrate", help="measure this machine's decode and prompt speed (~20 s) on a "
                                                      "GGUF, for the tok/s that models and plan show")
    calibrate.add_argument("gguf", nargs="?", type=Path, metavar="MODEL.gguf",
                           help="the model to probe with (default: the last one used; any small GGUF will do)")
    calibrate.add_argument("--gpu", action="store_true", help="also probe with every layer on the GPU")
    pull = commands.add_parser("pull", help="download MODEL[:QUANT] from Hugging Face (resumes; verifies sha256)")
    pull.add_argument("ref", metavar="MODEL[:QUANT]")
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
    commands.add_parser("list", help="the GGUF models on this disk (models folder, Hugging Face cache): size, "
                                     "quant, where, and the space each folder takes")
    rm = commands.add_parser("rm", help="delete a downloaded model (every shard of a split one); asks first")
    rm.add_argument("target", metavar="MODEL", help="a catalog id (qwen3-8b:Q4_K_M) or a file name in the models "
                                                    "folder; a file elsewhere only by its path")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask")
    _history_commands(commands)
    ask = commands.add_parser("ask", help="answer one question on stdout (for scripts and pipes)")
    ask.add_argument("question", nargs="?",
                     help="the question; read from stdin when omitted or '-'; text piped into stdin is added "
                          "after it (cat notes.md | qwen-chat ask \"summarise this\")")
    ask.add_argument("--no-think", action="store_true", help="answer without thinking (hybrid models)")
    ask.add_argument("--show-thinking", action="store_true", help="stream the thinking to stderr")
    ask.add_argument("--verbose", "-v", action="store_true",
                     help="after each answer, its prompt and decode speeds and speculative decoding's acceptance "
                          "(on stderr)")
    ask.add_argument("--allow-tool", action="append", default=[], metavar="NAME",
                     help="let the model run this MCP tool without asking (repeatable); without it, or a rule in "
                          "settings.toml, a call is asked about on the terminal, or refused when there is none")
    ask.add_argument("--allow-server", action="append", default=[], metavar="NAME",
                     help="let the model run every tool of this MCP server without asking (repeatable)")
    ask.add_argument("--no-tools", action="store_true", help="offer the model no tools, even with servers in mcp.json")
    _mcp_commands(commands)


def _history_commands(commands: argparse._SubParsersAction) -> None:
    search = commands.add_parser("search", help="full-text search across all conversations")
    search.add_argument("query", nargs="+")
    export = commands.add_parser("export", help="a conversation as Markdown or JSON (default: the latest)")
    export.add_argument("conversation", nargs="?", type=int, help="conversation id (see `search`)")
    export.add_argument("--format", choices=("md", "json"), default="md")
    export.add_argument("--thinking", action="store_true", help="include the model's thinking")
    export.add_argument("-o", "--output", type=Path, help="write to a file instead of stdout")
    imp = commands.add_parser("import", help="import a conversation exported as JSON")
    imp.add_argument("file", type=Path)
    commands.add_parser("salvage", help="copy what a damaged conversations database still holds into "
                                        "a new file beside it (the original is left as it is)")


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


def _serve_command(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve", help="serve the model to other tools over an OpenAI-compatible API (editors, scripts)",
        description="Load MODEL as the chat would (the same plan) and serve it at http://HOST:PORT/v1: "
                    "/v1/chat/completions, /v1/completions, /v1/models. Only this machine can reach it unless "
                    "--host says otherwise, and then an API key is required.")
    serve.add_argument("ref", nargs="?", metavar="MODEL", help=_MODEL_HELP)
    serve.add_argument("--host", default="127.0.0.1",
                       help="the address to listen on (default 127.0.0.1: this machine only; any other needs a key)")
    serve.add_argument("--port", type=int, default=8642, help="the port (default 8642)")
    serve.add_argument("--queue", type=int, default=8, metavar="N",
                       help="requests that may wait while one is answered; past it 503 with Retry-After (default 8)")
    serve.add_argument("--max-tokens", type=int, default=32768, metavar="N",
                       help="the most tokens one answer may have; larger requests are cut to it (default 32768)")
    serve.add_argument("--max-body", type=int, default=8, metavar="MIB",
                       help="the largest request body in MiB; larger ones get 413 (default 8)")
    serve.add_argument("--log-requests", action="store_true",
                       help="log what clients send (off by default: nothing a client sends is logged)")


def _serve_key_help(top: argparse.ArgumentParser) -> None:
    """`serve --api-key` is the key clients must send, not a server's key to send: say so in its help."""
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    for action in commands.choices["serve"]._actions:
        if action.dest == "api_key":
            action.help = ("the key clients must send (Authorization: Bearer KEY); required with another --host, "
                           "kept in the system keyring for next time")
