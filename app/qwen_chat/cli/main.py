"""The `qwen-chat` command. `--help` and `--version` import nothing heavy, so they answer at once."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from qwen_chat import __version__

if TYPE_CHECKING:  # --help and --version must not import the store (sqlite-utils) or anything heavy
    from qwen_chat.session.chat import LocalModel, Server
    from qwen_chat.store.database import Store


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qwen-chat",
        description="Chat with Qwen3 models locally, offline, in your terminal.",
        epilog="Keys in the app: Enter send, Esc stop, Ctrl+T thinking on/off, Ctrl+N new chat, "
               "F2 rename, Ctrl+D delete, Ctrl+P command palette, Ctrl+Q quit.",
    )
    parser.add_argument("--version", action="version", version=f"qwen-chat {__version__}")
    parser.add_argument("--model", "-m", metavar="MODEL",
                        help="a .gguf path (for a split model its first shard ...-00001-of-0000N.gguf), a catalog "
                             "id (qwen3-8b, qwen3-8b:Q5_K_M) or a downloaded file's name; default: the last one")
    parser.add_argument("--ctx", type=int, metavar="N",
                        help="context size in tokens (default: the model's own, as far as memory allows)")
    parser.add_argument("--endpoint", metavar="URL",
                        help="chat through an OpenAI-compatible server instead (llama-server, vLLM, SGLang), "
                             "e.g. http://host:8000/v1")
    parser.add_argument("--api-key", metavar="KEY",
                        help="the endpoint's API key; stored in the system keyring for next time, never in a file")
    parser.add_argument("--remote-model", metavar="NAME", help="which of the endpoint's models (default: the first)")
    parser.add_argument("--save-endpoint", metavar="NAME",
                        help="save --endpoint (and --remote-model) under NAME in settings.toml; later: --endpoint NAME")
    parser.add_argument("--db", type=Path, metavar="PATH",
                        help="conversations database (default: in your data folder; env QWEN_CHAT_DB)")
    _add_commands(parser.add_subparsers(dest="command", title="commands (without one, the chat opens)"))
    return parser


def _add_commands(commands: argparse._SubParsersAction) -> None:
    commands.add_parser("models", help="the Qwen3 catalog with a verdict per quant for this machine")
    plan = commands.add_parser("plan", help="how MODEL[:QUANT] (or a .gguf path) would run here")
    plan.add_argument("model", metavar="MODEL[:QUANT]")
    plan.add_argument("--ctx", type=int, metavar="N", dest="plan_ctx", help="context size to plan for")
    plan.add_argument("--exact", action="store_true",
                      help="read the files' GGUF headers from the hub (a few MB) for exact tensor sizes")
    commands.add_parser("doctor", help="hardware, engine build, paths and versions")
    pull = commands.add_parser("pull", help="download MODEL[:QUANT] from Hugging Face (resumes; verifies sha256)")
    pull.add_argument("model", metavar="MODEL[:QUANT]")
    pull.add_argument("--keep-shards", action="store_true", help="keep a split model's shards after merging")
    merge = commands.add_parser("merge", help="join a split GGUF (...-00001-of-0000N.gguf) into one file")
    merge.add_argument("first_shard", type=Path)
    merge.add_argument("out", type=Path, nargs="?")
    merge.add_argument("--keep-shards", action="store_true", help="keep the shards after a verified merge")
    commands.add_parser("login", help="store a Hugging Face token in the system keyring")
    search = commands.add_parser("search", help="full-text search across all conversations")
    search.add_argument("query", nargs="+")
    export = commands.add_parser("export", help="a conversation as Markdown or JSON (default: the latest)")
    export.add_argument("conversation", nargs="?", type=int, help="conversation id (see `search`)")
    export.add_argument("--format", choices=("md", "json"), default="md")
    export.add_argument("--thinking", action="store_true", help="include the model's thinking")
    export.add_argument("-o", "--output", type=Path, help="write to a file instead of stdout")
    imp = commands.add_parser("import", help="import a conversation exported as JSON")
    imp.add_argument("file", type=Path)
    ask = commands.add_parser("ask", help="answer one question on stdout (for scripts and pipes)")
    ask.add_argument("question", nargs="?", help="the question; read from stdin when omitted or '-'")
    ask.add_argument("--no-think", action="store_true", help="answer without thinking (hybrid models)")
    ask.add_argument("--show-thinking", action="store_true", help="stream the thinking to stderr")


def _last_model_file() -> Path:
    from qwen_chat.system.paths import data_dir

    return data_dir() / "last-model.txt"


def _resolve_model(arg: str | None) -> Path | None:
    if arg is not None:
        from qwen_chat.models.resolve import resolve_model

        return resolve_model(arg)
    remembered = _last_model_file()
    if remembered.is_file():
        path = Path(remembered.read_text(encoding="utf-8").strip())
        if path.is_file():
            return path
    return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.ctx is not None and args.ctx < 256:
        print("qwen-chat: --ctx must be at least 256 tokens", file=sys.stderr)
        return 2
    if args.db is not None:
        os.environ["QWEN_CHAT_DB"] = str(args.db.expanduser())
    if args.command and args.command != "ask":
        return _report(args)
    if args.endpoint:
        return _chat_endpoint(args)
    from qwen_chat.models.resolve import ModelNotFound

    try:
        model = _resolve_model(args.model)
    except ModelNotFound as exc:
        print(f"qwen-chat: {exc}", file=sys.stderr)
        return 1
    if args.command == "ask":
        return _ask(args, model)
    if model is None:
        from qwen_chat.cli.welcome import first_run

        model = first_run()
        if model is None:
            return 2
    return _chat_local(model, args.ctx)


def _chat_local(model: Path, n_ctx: int | None) -> int:
    """Refuse before the screen opens when the file is broken or cannot fit; else open the chat on it."""
    from qwen_chat.models.gguf_files import ModelFileError, read_model_info
    from qwen_chat.models.planner import DoesNotFit
    from qwen_chat.qwen3.template import ChatTemplate, TemplateRenderError
    from qwen_chat.session.model_loading import plan_for_file
    from qwen_chat.store.database import Store
    from qwen_chat.store.records import StoreError
    from qwen_chat.system.hardware import detect
    from qwen_chat.system.logging_setup import setup_logging
    from qwen_chat.system.paths import database_path

    setup_logging()
    try:
        info = read_model_info(model)
        machine = detect()
        for warning in machine.warnings:
            print(f"qwen-chat: warning: {warning}", file=sys.stderr)
        # refuse before the screen opens if it cannot fit
        plan_for_file(info, ChatTemplate(info.chat_template).variant, machine, n_ctx)
        store = Store(database_path())
    except (ModelFileError, DoesNotFit, StoreError, TemplateRenderError) as exc:
        print(f"qwen-chat: {exc}", file=sys.stderr)
        return 1
    last = _last_model_file()
    last.parent.mkdir(parents=True, exist_ok=True)
    last.write_text(str(info.path.resolve()), encoding="utf-8")

    from qwen_chat.session.chat import LocalModel

    return _run_app(store, LocalModel(info.path, n_ctx))


def _run_app(store: Store, source: LocalModel | Server) -> int:
    """Open the chat on a model file or an endpoint; problems after start are shown inside the app."""
    from qwen_chat.session.chat import ChatSession
    from qwen_chat.tui.app import QwenChatApp

    try:
        QwenChatApp(ChatSession(store, source=source)).run()  # the app closes the session when it exits
    finally:
        store.close()
    return 0


def _report(args: argparse.Namespace) -> int:
    from qwen_chat.cli.reports import print_doctor, print_models, print_plan
    from qwen_chat.models.catalog import CatalogError

    if args.command in ("search", "export", "import"):
        from qwen_chat.cli.history import run_export, run_import, run_search

        if args.command == "search":
            return run_search(" ".join(args.query))
        if args.command == "export":
            return run_export(args.conversation, args.format, args.thinking, args.output)
        return run_import(args.file)
    if args.command in ("pull", "merge", "login"):
        from qwen_chat.cli.transfer import run_login, run_merge, run_pull

        if args.command == "pull":
            return run_pull(args.model, args.keep_shards)
        if args.command == "merge":
            return run_merge(args.first_shard, args.out, args.keep_shards)
        return run_login()
    try:
        if args.command == "models":  # noqa: SIM116
            return print_models()
        if args.command == "plan":
            return print_plan(args.model, args.plan_ctx or args.ctx, exact=args.exact)
        return print_doctor()
    except CatalogError as exc:
        print(f"qwen-chat: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `qwen-chat models | head`: the reader left, which is fine
        sys.stderr.close()
        return 0


def _ask(args: argparse.Namespace, model: Path | None) -> int:
    from qwen_chat.cli.ask import ask
    from qwen_chat.models.gguf_files import ModelFileError
    from qwen_chat.models.planner import DoesNotFit
    from qwen_chat.system.logging_setup import setup_logging

    if model is None:
        print("qwen-chat: no model given: qwen-chat --model PATH_OR_ID ask \"...\"", file=sys.stderr)
        return 2
    question = args.question if args.question not in (None, "-") else sys.stdin.read()
    if not question.strip():
        print("qwen-chat: nothing to ask", file=sys.stderr)
        return 2
    setup_logging()
    try:
        return ask(model, question.strip(), think=False if args.no_think else None,
                   show_thinking=args.show_thinking, n_ctx=args.ctx)
    except (ModelFileError, DoesNotFit) as exc:
        print(f"qwen-chat: {exc}", file=sys.stderr)
        return 1


def _chat_endpoint(args: argparse.Namespace) -> int:
    from qwen_chat.config.settings import Endpoint, load_endpoints, save_endpoint
    from qwen_chat.engines.http import EndpointError, api_key_for, list_models, remember_api_key
    from qwen_chat.store.database import Store
    from qwen_chat.store.records import StoreError
    from qwen_chat.system.logging_setup import setup_logging
    from qwen_chat.system.paths import database_path

    setup_logging()
    problems: list[str] = []
    saved = load_endpoints(problems)
    for problem in problems:
        print(f"qwen-chat: {problem}", file=sys.stderr)
    if args.endpoint in saved:
        url, model = saved[args.endpoint].url, args.remote_model or saved[args.endpoint].model
    elif args.endpoint.startswith(("http://", "https://")):
        url, model = args.endpoint.rstrip("/"), args.remote_model
    else:
        names = ", ".join(saved) or "none saved yet"
        print(f"qwen-chat: --endpoint takes an http(s) URL or a saved name ({names})", file=sys.stderr)
        return 2
    args.remote_model = model
    key = args.api_key or api_key_for(url)
    try:
        served = [m.get("id") for m in list_models(url, key)]
        if args.remote_model and args.remote_model not in served:
            raise EndpointError(f"{url} does not serve {args.remote_model}; it serves: {', '.join(map(str, served))}")
        store = Store(database_path())
    except (EndpointError, StoreError) as exc:
        print(f"qwen-chat: {exc}", file=sys.stderr)
        return 1
    if args.api_key:
        remember_api_key(url, args.api_key)
    if args.save_endpoint:
        try:
            save_endpoint(Endpoint(args.save_endpoint, url, args.remote_model))
        except OSError as exc:  # a settings.toml that does not parse is never overwritten
            print(f"qwen-chat: the endpoint was not saved: {exc}", file=sys.stderr)
    from qwen_chat.session.chat import Server

    return _run_app(store, Server(url, key, args.remote_model))
