"""The `qwen-chat` command. `--help` and `--version` import nothing heavy, so they answer at once.

Exit status: 0 done, 1 failed (the message says why), 2 wrong usage, 130 interrupted by Ctrl-C (one line,
never a traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from qwen_chat.cli import output
from qwen_chat.cli.parser import parse

if TYPE_CHECKING:  # --help and --version must not import the store (sqlite-utils) or anything heavy
    from qwen_chat.cli.ask_tools import AskTools
    from qwen_chat.cli.endpoint import Target
    from qwen_chat.session.sources import LocalModel, Server
    from qwen_chat.store.database import Store
    from qwen_chat.tools.mcp_hub import McpHub

INTERRUPTED = 130  # what shells report for a program stopped by SIGINT (128 + 2)


def _last_model_file() -> Path:
    from qwen_chat.system.paths import data_dir

    return data_dir() / "last-model.txt"


def _resolve_model(arg: str | None) -> Path | None:
    if arg is not None:
        from qwen_chat.hub.resolve import resolve_model

        return resolve_model(arg)
    remembered = _last_model_file()
    if remembered.is_file():
        path = Path(remembered.read_text(encoding="utf-8").strip())
        if path.is_file():
            return path
    return None


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # into a pipe the output is buffered: a reader that left must show here, not at exit
        return code
    except KeyboardInterrupt:
        print("\nqwen-chat: interrupted (Ctrl-C)", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:  # `qwen-chat search x | head`: the reader left, which is fine
        _quiet_stdout()
        return 0


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so that Python's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _main(argv: list[str] | None) -> int:
    args = parse(argv)
    if args.ctx is not None and args.ctx < 256:
        output.error("--ctx must be at least 256 tokens")
        return 2
    if args.db is not None:
        os.environ["QWEN_CHAT_DB"] = str(args.db.expanduser())
    if args.threads is not None:  # every load and report of this run reads it (config/engine_settings.py)
        os.environ["QWEN_CHAT_THREADS"] = str(args.threads)
    if args.command == "ask":
        return _ask(args)
    if args.command == "serve":
        from qwen_chat.cli.serve_command import run_serve
        from qwen_chat.system.logging_setup import setup_logging

        setup_logging()
        return run_serve(args, _resolve_model)
    if args.command:
        return _report(args)
    if args.endpoint:
        return _chat_endpoint(args)
    from qwen_chat.hub.resolve import ModelNotFound

    try:
        model = _resolve_model(args.model)
    except ModelNotFound as exc:
        output.error(exc)
        return 1
    if model is None:
        from qwen_chat.cli.welcome import first_run

        model, code = first_run()  # a download that failed for the network is 1, a declined offer 0
        if model is None:
            return code
    return _chat_local(model, args.ctx, args.seed)


def _no_terminal() -> int | None:
    """The chat draws a full-screen app: without a terminal on both stdin and stdout it would write escape codes
    into a pipe or a file, or wait for keys that never come. Refuse in one line instead."""
    for name in ("stdin", "stdout"):
        if not output.is_terminal(getattr(sys, name)):
            output.error(f"the chat needs a terminal, and {name} is not one (a pipe, a file or closed). For "
                         f'scripts and pipes use ask: qwen-chat ask "question" (with --model or --endpoint)')
            return 2
    return None


def _chat_local(model: Path, n_ctx: int | None, seed: int | None = None) -> int:
    """Refuse before the screen opens when the file is broken or cannot fit; else open the chat on it, handing
    the session the plan made here (one start reads the file, detects the hardware and plans once)."""
    from qwen_chat.config.settings import load_chat
    from qwen_chat.gguf.files import ModelFileError, read_model_info
    from qwen_chat.planning.planner import DoesNotFit
    from qwen_chat.qwen3.template import TemplateRenderError
    from qwen_chat.session.model_loading import prepare_info
    from qwen_chat.session.sources import LocalModel
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
            output.error(f"warning: {warning}")
        # the app's own load (its context setting, the GPU layers remembered here), so what passes here loads
        planned = prepare_info(info, n_ctx, machine, load_chat().context)
        refused = _no_terminal()
        if refused is not None:
            return refused
        store = Store(database_path())
    except (ModelFileError, DoesNotFit, StoreError, TemplateRenderError) as exc:
        output.error(exc)
        return 1
    last = _last_model_file()
    last.parent.mkdir(parents=True, exist_ok=True)
    # absolute, not resolved: a model in the Hugging Face cache is a link whose target is named by its hash
    last.write_text(os.path.abspath(info.path), encoding="utf-8")
    return _run_app(store, LocalModel(info.path, n_ctx, planned), seed)


def _run_app(store: Store, source: LocalModel | Server, seed: int | None) -> int:
    """Open the chat on a model file or an endpoint (`seed`: --seed, for every answer); problems after start are
    shown inside the app."""
    from qwen_chat.session.chat import ChatSession
    from qwen_chat.tui.app import QwenChatApp

    hub = _tool_hub()
    try:
        session = ChatSession(store, source=source, tools=hub)
        session.seed = seed
        QwenChatApp(session).run()  # the app closes the session when it exits
    finally:
        hub.close()
        store.close()
    return 0


def _tool_hub() -> McpHub:
    """The MCP servers of mcp.json, connecting in the background (the app shows their state, F9). With none
    the hub is still made, not started: F9 reloads mcp.json into it. Problems in the file are reported in the
    app at start (config.check)."""
    from qwen_chat.config.mcp_config import load_servers
    from qwen_chat.config.tool_settings import load_tool_settings
    from qwen_chat.session.tool_loop import STORE_LIMIT
    from qwen_chat.tools.mcp_hub import McpHub

    entries, _ = load_servers()
    # results are cut for the model per call (tools.result_limit); the store keeps up to STORE_LIMIT of each
    hub = McpHub(entries, call_timeout=load_tool_settings().call_timeout, result_limit=STORE_LIMIT)
    if entries:
        hub.start()
    return hub


def _report(args: argparse.Namespace) -> int:
    if args.command == "mcp":
        from qwen_chat.cli.mcp_command import run_mcp

        return run_mcp(args)
    if args.command in ("search", "export", "import", "salvage"):
        from qwen_chat.cli import history

        if args.command == "search":
            return history.run_search(" ".join(args.query))
        if args.command == "export":
            return history.run_export(args.conversation, args.format, args.thinking, args.output)
        if args.command == "salvage":
            return history.run_salvage()
        return history.run_import(args.file)
    if args.command in ("list", "rm"):
        from qwen_chat.cli.local_models_command import run_list, run_rm

        return run_list() if args.command == "list" else run_rm(args.target, yes=args.yes)
    if args.command in ("pull", "merge", "login"):
        from qwen_chat.cli.transfer import run_login, run_merge, run_pull

        if args.command == "pull":
            return run_pull(args.ref, args.keep_shards)
        if args.command == "merge":
            return run_merge(args.first_shard, args.out, delete_shards=args.delete_shards)
        return run_login()
    from qwen_chat.system.logging_setup import setup_logging

    setup_logging()  # the commands below probe the hardware: what llama.cpp says then belongs in llama.log
    if args.command == "calibrate":
        from qwen_chat.cli.reports import run_calibrate

        return run_calibrate(args.gguf, args.model, _resolve_model, gpu=args.gpu)
    from qwen_chat.catalog.entries import CatalogError
    from qwen_chat.cli.reports import print_doctor, print_models, print_plan

    try:
        if args.command == "models":  # noqa: SIM116
            return print_models(fits=True) if args.fits else print_models()
        if args.command == "plan":
            return print_plan(args.ref, args.ctx, exact=args.exact)
        return print_doctor()
    except CatalogError as exc:
        output.error(exc)
        return 1


def _ask(args: argparse.Namespace) -> int:
    from qwen_chat.cli.ask import AskInputError, question_from
    from qwen_chat.cli.endpoint import Refused, remember, resolve
    from qwen_chat.gguf.files import ModelFileError
    from qwen_chat.hub.resolve import ModelNotFound
    from qwen_chat.planning.planner import DoesNotFit
    from qwen_chat.qwen3.template import TemplateRenderError
    from qwen_chat.system.logging_setup import setup_logging

    try:
        target = resolve(args.endpoint, args.api_key, args.remote_model) if args.endpoint else None
        model = None if target else _resolve_model(args.model)
        if target is None and model is None:
            raise Refused('no model given: qwen-chat ask --model PATH_OR_ID "question", or --endpoint URL', 2)
        question = question_from(args.question, sys.stdin)
    except (Refused, ModelNotFound, AskInputError) as exc:
        output.error(exc)
        return exc.code if isinstance(exc, Refused) else 1 if isinstance(exc, ModelNotFound) else 2
    setup_logging()
    try:
        code = _ask_with(args, target, model, question)
    except (ModelFileError, DoesNotFit, TemplateRenderError) as exc:
        output.error(exc)
        return 1
    if code == 0 and target is not None:  # as the chat does: only a key and an endpoint that worked are kept
        remember(target, args.api_key, args.save_endpoint)
    return code


def _ask_with(args: argparse.Namespace, target: Target | None, model: Path | None, question: str) -> int:
    """One answer from the endpoint or the model file (one of the two is set), with tools when there are any. A
    model file is read and planned before the MCP servers start, so a file that cannot load starts nothing."""
    from qwen_chat.cli.ask import ask, planned
    from qwen_chat.session.sources import Server

    tools = _ask_tools(args)
    source: LocalModel | Server
    if target is not None:
        source = Server(target.url, target.api_key, target.model)
    else:
        assert model is not None  # checked by _ask
        source = planned(model, args.ctx, with_tools=tools is not None)
    return ask(source, question, think=False if args.no_think else None, show_thinking=args.show_thinking,
               seed=args.seed, tools=tools, verbose=args.verbose)


def _ask_tools(args: argparse.Namespace) -> AskTools | None:
    """The MCP servers `ask` offers the model (mcp.json's enabled ones), or None for none; the file's problems
    are reported on stderr and the broken entries skipped."""
    from qwen_chat.cli.ask_tools import AskTools
    from qwen_chat.config.mcp_config import load_servers

    if args.no_tools:
        return None
    entries, problems = load_servers()
    for problem in problems:
        output.error(problem)
    enabled = [e for e in entries if not e.disabled]
    return AskTools(enabled, tuple(args.allow_tool), tuple(args.allow_server)) if enabled else None


def _chat_endpoint(args: argparse.Namespace) -> int:
    from qwen_chat.cli.endpoint import Refused, check, remember, resolve
    from qwen_chat.store.database import Store
    from qwen_chat.store.records import StoreError
    from qwen_chat.system.logging_setup import setup_logging
    from qwen_chat.system.paths import database_path

    setup_logging()
    try:
        target = resolve(args.endpoint, args.api_key, args.remote_model)
        check(target)
    except Refused as exc:
        output.error(exc)
        return exc.code
    refused = _no_terminal()
    if refused is not None:
        return refused
    try:
        store = Store(database_path())
    except StoreError as exc:
        output.error(exc)
        return 1
    remember(target, args.api_key, args.save_endpoint)
    from qwen_chat.session.sources import Server

    return _run_app(store, Server(target.url, target.api_key, target.model), args.seed)
