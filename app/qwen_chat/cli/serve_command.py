"""`qwen-chat serve [MODEL]`: the model, planned as the chat plans it, behind an OpenAI-compatible API.

Refuses before loading anything when the port is taken, or when another host is asked for without an API key
(`--api-key`, or the one stored in the system keyring by an earlier `--api-key`). Imported only when `serve`
runs (it loads uvicorn)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from qwen_chat.cli import output
from qwen_chat.gguf.files import ModelFileError, read_model_info
from qwen_chat.hub.resolve import ModelNotFound
from qwen_chat.planning.planner import DoesNotFit
from qwen_chat.qwen3.template import TemplateRenderError
from qwen_chat.serve.runner import ModelServer, ServeOptions, is_loopback, port_problem, store_key, stored_key
from qwen_chat.session.sources import LocalModel


def run_serve(args: argparse.Namespace, resolve: Callable[[str | None], Path | None]) -> int:
    key = args.api_key or (None if is_loopback(args.host) else stored_key())
    if key is None and not is_loopback(args.host):
        output.error(f"--host {args.host} lets other machines reach the model: give it an API key with "
                     "--api-key KEY (kept in the system keyring for next time); clients send it as a Bearer token")
        return 2
    problem = port_problem(args.host, args.port)
    if problem is not None:
        output.error(problem)
        return 1
    try:
        source = _planned(args, resolve)
    except (ModelNotFound, ModelFileError, DoesNotFit, TemplateRenderError) as exc:
        output.error(exc)
        return 1
    if source is None:
        output.error("no model given: qwen-chat serve MODEL (a .gguf path, a catalog id or a downloaded file)")
        return 2
    server = ModelServer(source, _options(args, key))
    assert source.planned is not None
    output.note(f"Loading {source.path.name} ({source.planned.plan.short(source.planned.request.n_gpu_layers)}) ...")
    failed = server.load()
    if failed is not None:
        output.error(failed)
        server.gate.close()
        return 1
    if args.api_key:
        store_key(args.api_key)
    output.note(f"Serving {source.path.name} at {server.url} (context {server.gate.model.n_ctx:,} tokens"
                f"{', API key required' if key else ''}). Ctrl-C stops.")
    server.serve()
    return 0


def _planned(args: argparse.Namespace, resolve: Callable[[str | None], Path | None]) -> LocalModel | None:
    """The model read and planned as the chat does (its context setting, the GPU layers remembered here)."""
    from qwen_chat.config.settings import load_chat
    from qwen_chat.session.model_loading import prepare_info
    from qwen_chat.system.hardware import detect

    model = resolve(args.ref or args.model)
    if model is None:
        return None
    info = read_model_info(model)
    machine = detect()
    for warning in machine.warnings:
        output.error(f"warning: {warning}")
    return LocalModel(info.path, args.ctx, prepare_info(info, args.ctx, machine, load_chat().context))


def _options(args: argparse.Namespace, key: str | None) -> ServeOptions:
    return ServeOptions(host=args.host, port=args.port, api_key=key, queue_limit=args.queue,
                        max_body=args.max_body * 1024 * 1024, max_tokens=args.max_tokens,
                        log_requests=args.log_requests, seed=args.seed)
