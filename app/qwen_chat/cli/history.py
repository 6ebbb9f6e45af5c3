"""`qwen-chat search`, `export` and `import`: the conversation history from the command line."""

from __future__ import annotations

import sys
from pathlib import Path

from qwen_chat.store.database import MARK_END, MARK_START, Store
from qwen_chat.store.export import from_json, to_json, to_markdown
from qwen_chat.store.records import StoreError
from qwen_chat.system.paths import database_path


def run_search(query: str) -> int:
    try:
        hits = Store(database_path()).search(query)
    except StoreError as exc:
        print(f"qwen-chat: {exc}", file=sys.stderr)
        return 1
    bold = sys.stdout.isatty()
    for hit in hits:
        snippet = " ".join(hit.snippet.split())
        snippet = snippet.replace(MARK_START, "\033[1m" if bold else "[").replace(MARK_END, "\033[0m" if bold else "]")
        print(f"{hit.conversation_id:>5}  {hit.title[:40]:40}  {hit.role:9}  {snippet}")
    if not hits:
        print("no matches", file=sys.stderr)
    return 0 if hits else 1


def run_export(conversation_id: int | None, fmt: str, thinking: bool, output: Path | None) -> int:
    try:
        store = Store(database_path())
        conversation = store.conversation(conversation_id) if conversation_id else store.latest_conversation()
        if conversation is None:
            raise StoreError("there are no conversations yet")
        text = to_json(store, conversation, thinking) if fmt == "json" else to_markdown(store, conversation, thinking)
    except StoreError as exc:
        print(f"qwen-chat: {exc}", file=sys.stderr)
        return 1
    if output:
        output.write_text(text, encoding="utf-8")
        print(f"wrote {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def run_import(path: Path) -> int:
    try:
        conversation = from_json(Store(database_path()), path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        print(f"qwen-chat: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"qwen-chat: {path}: {exc}", file=sys.stderr)
        return 1
    print(f"imported as conversation {conversation.id}: {conversation.title}", file=sys.stderr)
    return 0
