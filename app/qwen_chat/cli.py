"""The `qwen-chat` command. `--help` and `--version` import nothing heavy, so they answer at once."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qwen-chat",
        description="Chat with Qwen3 models locally, offline, in your terminal.",
        epilog="Keys in the app: Enter send, Esc stop, Ctrl+T thinking on/off, Ctrl+N new chat, "
               "F2 rename, Ctrl+D delete, Ctrl+P command palette, Ctrl+Q quit.",
    )
    parser.add_argument("--version", action="version", version=f"qwen-chat {__version__}")
    parser.add_argument("--model", "-m", type=Path, metavar="GGUF",
                        help="model file (for a split model, its first shard ...-00001-of-0000N.gguf); "
                             "default: the model used last time")
    parser.add_argument("--ctx", type=int, metavar="N",
                        help="context size in tokens (default: the model's own, as far as memory allows)")
    parser.add_argument("--db", type=Path, metavar="PATH",
                        help="conversations database (default: in your data folder; env QWEN_CHAT_DB)")
    return parser


def _last_model_file() -> Path:
    from .paths import data_dir

    return data_dir() / "last-model.txt"


def _resolve_model(arg: Path | None) -> Path | None:
    if arg is not None:
        return arg.expanduser()
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
    model = _resolve_model(args.model)
    if model is None:
        print("qwen-chat: no model given. Run: qwen-chat --model PATH/TO/Qwen3-8B-Q4_K_M.gguf", file=sys.stderr)
        return 2

    from .gguf_files import ModelFileError, read_model_info
    from .hardware import detect
    from .logging_setup import setup_logging
    from .memory_fit import DoesNotFit, plan_load
    from .paths import database_path
    from .store import Store, StoreError

    setup_logging()
    try:
        info = read_model_info(model)
        plan_load(info, detect(), args.ctx)  # refuse before the screen opens if it cannot fit
        store = Store(database_path())
    except (ModelFileError, DoesNotFit, StoreError) as exc:
        print(f"qwen-chat: {exc}", file=sys.stderr)
        return 1
    last = _last_model_file()
    last.parent.mkdir(parents=True, exist_ok=True)
    last.write_text(str(info.path.resolve()), encoding="utf-8")

    from .tui.app import QwenChatApp

    app = QwenChatApp(store=store, model_path=info.path, n_ctx=args.ctx)
    app.run()
    store.close()
    if app.fatal_error:
        print(f"qwen-chat: {app.fatal_error}", file=sys.stderr)
        return 1
    return 0
