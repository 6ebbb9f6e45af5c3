"""Conversations out to Markdown or JSON (thinking included or not), and JSON back in."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from qwen_chat.store.database import Store
from qwen_chat.store.import_checks import MAX_FILE_BYTES, MAX_TEXT_CHARS, Imported, Question, checked, shown
from qwen_chat.store.records import Conversation, Message, StoreError

FORMAT = "qwen-chat-conversation"
VERSION = 1


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")


def to_json(store: Store, conversation: Conversation, thinking: bool = True) -> str:
    messages = []
    for m in store.messages(conversation.id):
        item: dict[str, Any] = {"role": m.role, "content": m.content, "status": m.status,
                                "created_at": _when(m.created_at)}
        if m.attachments:
            item["attachments"] = [{"name": a.name, "content": a.content, "tokens": a.tokens} for a in m.attachments]
        if m.role == "assistant":
            item.update(model=m.model, mode=m.mode, sampling=m.sampling, completion_tokens=m.completion_tokens,
                        tokens_per_second=round(m.tokens_per_second, 2))
            if thinking and m.thinking:
                item["thinking"] = m.thinking
            if m.tool_calls:
                item["tool_calls"] = _calls_json(m)
        messages.append(item)
    return json.dumps({"format": FORMAT, "version": VERSION, "title": conversation.title,
                       "model": conversation.model, "system_prompt": conversation.system_prompt,
                       "created_at": _when(conversation.created_at), "messages": messages},
                      ensure_ascii=False, indent=2) + "\n"


def _calls_json(m: Message) -> list[dict[str, Any]]:
    return [{"id": c.call_id, "name": c.name, "server": c.server, "arguments": c.arguments, "status": c.status,
             "result": c.result, "truncated": c.truncated} for c in m.tool_calls]


def _calls_markdown(m: Message) -> list[str]:
    lines = []
    for c in m.tool_calls:
        where = f" on {c.server}" if c.server else ""
        arguments = json.dumps(c.arguments, ensure_ascii=False, indent=2)
        fence, result_fence = _fence(arguments), _fence(c.result)
        lines += [f"**Tool call:** `{c.name}`{where} ({c.status})", "", f"{fence}json", arguments, fence, ""]
        if c.result:
            lines += ["Result:", "", f"{result_fence}text", c.result.rstrip("\n"), result_fence, ""]
    return lines


def _fence(text: str) -> str:
    """A code fence longer than any backtick run inside, so the text cannot close it."""
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def to_markdown(store: Store, conversation: Conversation, thinking: bool = False) -> str:
    lines = [f"# {conversation.title}", ""]
    if conversation.system_prompt:
        lines += ["**System:**", "", conversation.system_prompt, ""]
    for m in store.messages(conversation.id):
        who = "You" if m.role == "user" else "Qwen"
        suffix = "" if m.status == "complete" else f" *({m.status})*"
        lines += [f"## {who}{suffix}", ""]
        if thinking and m.thinking:
            fence = _fence(m.thinking)
            lines += ["<details><summary>Thinking</summary>", "", f"{fence}text", m.thinking, fence, "", "</details>",
                      ""]
        lines += [m.content, ""]
        lines += _calls_markdown(m)
        for file in m.attachments:
            fence = _fence(file.content)
            lines += [f"**{file.name}** (attached):", "", fence, file.content.rstrip("\n"), fence, ""]
    return "\n".join(lines)


MAX_DEPTH = 16  # an export nests 4 or 5 levels (the file, its messages, a message, its sampling, a list in it)
_TOO_DEEP = f"the JSON is nested more than {MAX_DEPTH} levels deep (an export nests 5 at most); nothing was imported"


def read_export(path: Path) -> str:
    """The text of an export file, refused before it is read when it is larger than any export can be."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise StoreError(f"the file is {size / 1e6:,.1f} MB; an export qwen-chat imports is at most "
                         f"{MAX_FILE_BYTES >> 20} MiB (messages of at most {MAX_TEXT_CHARS:,} characters each)")
    return path.read_text(encoding="utf-8")


def _parse(text: str) -> Any:
    if len(text) > MAX_FILE_BYTES:
        raise StoreError(f"the export is {len(text):,} characters; at most {MAX_FILE_BYTES:,} are imported")
    try:
        data = json.loads(text)
    except RecursionError:  # json's C parser stops at Python's recursion limit rather than crash
        raise StoreError(_TOO_DEEP) from None
    except ValueError as exc:  # JSONDecodeError, and numbers longer than Python converts
        raise StoreError(f"not JSON: {exc}") from None
    _check_depth(data)
    return data


def _check_depth(data: Any) -> None:
    """Without recursion: the point is to refuse what would exhaust it."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise StoreError(_TOO_DEEP)
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def from_json(store: Store, text: str) -> Conversation:
    """Import an exported conversation as a new one; refuses anything that is not one, saying why."""
    data = _parse(text)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise StoreError(f"not a qwen-chat conversation export (its format is not {FORMAT!r})")
    version = data.get("version")
    if isinstance(version, bool) or version != VERSION:  # true == 1 in Python, never in an export
        raise StoreError(f"export version {shown(version)} is not supported (this qwen-chat reads {VERSION})")
    return _store(store, checked(data))


def _store(store: Store, imported: Imported) -> Conversation:
    """Write what `checked` passed. Should the database still fail halfway (a full disk), the part written is
    deleted again: an import is all or nothing."""
    conversation = store.create_conversation(model=imported.model, title=imported.title,
                                             system_prompt=imported.system_prompt)
    try:
        for m in imported.messages:
            if isinstance(m, Question):
                store.add_user_message(conversation.id, m.content, files=m.files)
                continue
            answer = store.start_answer(conversation.id, m.model, m.mode, m.sampling)
            store.finish_answer(answer.id, m.status, m.thinking, m.content, True, m.stats)
            if m.calls:
                store.add_tool_calls(answer.id, m.calls)
        store.rename(conversation.id, imported.title)  # the first question names a chat; the export's name wins
    except (StoreError, sqlite3.Error) as exc:
        store.delete(conversation.id)
        raise StoreError(f"the import failed and was undone: {exc}") from None
    return store.conversation(conversation.id)
