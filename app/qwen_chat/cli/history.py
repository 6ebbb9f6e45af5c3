"""`qwen-chat search`, `export`, `import` and `salvage`: the conversation history from the command line."""

from __future__ import annotations

import sys
from pathlib import Path

from qwen_chat.cli import output
from qwen_chat.store.database import MARK_END, MARK_START, Store
from qwen_chat.store.export import from_json, read_export, to_json, to_markdown
from qwen_chat.store.records import StoreError
from qwen_chat.system.paths import database_path


def _snippet(text: str, bold: bool) -> str:
    """A search hit on one line: its own control characters made visible, then the match marked (the marks are
    control characters themselves, so they are swapped in after)."""
    start, end = ("\033[1m", "\033[0m") if bold else ("[", "]")
    first, *marked = " ".join(text.split()).split(MARK_START)
    parts = [output.one_line(first)]
    for piece in marked:
        match, _, rest = piece.partition(MARK_END)
        parts.append(f"{start}{output.one_line(match)}{end}{output.one_line(rest)}")
    return "".join(parts)


def run_search(query: str) -> int:
    try:
        hits = Store(database_path()).search(query)
    except StoreError as exc:
        output.error(exc)
        return 1
    bold = output.is_terminal(sys.stdout)
    for hit in hits:
        title = output.one_line(hit.title)[:40]
        print(f"{hit.conversation_id:>5}  {title:40}  {output.one_line(hit.role):9}  {_snippet(hit.snippet, bold)}")
    if not hits:
        output.note("no matches")
    return 0 if hits else 1


def run_export(conversation_id: int | None, fmt: str, thinking: bool, output_path: Path | None) -> int:
    try:
        store = Store(database_path())
        conversation = store.conversation(conversation_id) if conversation_id else store.latest_conversation()
        if conversation is None:
            raise StoreError("there are no conversations yet")
        text = to_json(store, conversation, thinking) if fmt == "json" else to_markdown(store, conversation, thinking)
    except StoreError as exc:
        output.error(exc)
        return 1
    if output_path:
        try:
            output_path.write_text(text, encoding="utf-8")
        except OSError as exc:
            output.error(f"cannot write {output_path}: {exc.strerror or exc}")
            return 1
        output.note(f"wrote {output_path}")
    else:
        output.data(text)  # exact into a pipe or a file; on a terminal its control characters are shown
    return 0


def run_import(path: Path) -> int:
    try:
        text = read_export(path)
    except (OSError, UnicodeDecodeError) as exc:
        output.error(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}")
        return 1
    except StoreError as exc:
        output.error(f"{path}: {exc}")
        return 1
    try:
        conversation = from_json(Store(database_path()), text)
    except StoreError as exc:
        output.error(f"{path}: {exc}")
        return 1
    output.note(f"imported as conversation {conversation.id}: {output.one_line(conversation.title)}")
    return 0


def run_salvage() -> int:
    from qwen_chat.store.salvage import salvage

    source = database_path()
    try:
        result = salvage(source)
    except StoreError as exc:
        output.error(exc)
        return 1
    if result.method == "vacuum":
        how = "SQLite read every page: nothing was lost"
    else:
        how = (f"copied row by row; {result.unreadable:,} row ids on damaged pages could not be read"
               + (f"; {result.stand_ins} conversations whose own row was lost are named 'Recovered conversation N'"
                  if result.stand_ins else ""))
    output.note(f"salvaged {result.conversations:,} conversations and {result.messages:,} messages ({how})")
    output.note(f"the original, left as it was: {result.source}")
    output.note(f"the salvaged copy: {result.copy}")
    output.note(f"to use it: qwen-chat --db {result.copy} (or move the original aside and rename the copy to "
                f"{result.source.name})")
    return 0 if result.conversations or result.messages else 1
