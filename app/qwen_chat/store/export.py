"""Conversations out to Markdown or JSON (thinking included or not), and JSON back in."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from qwen_chat.store.database import Store
from qwen_chat.store.records import TOOL_STATUSES, Attachment, Conversation, Message, StoreError
from qwen_chat.store.tool_calls import NewCall

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


# What an import accepts. A conversation qwen-chat exported stays far below these; a file beyond them is a
# mistake or an attack, and a message of tens of MB would make the app take most of a minute to show it.
MAX_FILE_BYTES = 32 << 20  # 32 MiB per file
MAX_TEXT_CHARS = 1 << 20  # 1,048,576 characters per message, thinking or system prompt: more than 262,144 tokens,
# the longest Qwen3 context, can hold
MAX_TITLE_CHARS = 1000
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


def _check_sizes(data: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    title = data.get("title")
    if isinstance(title, str) and len(title) > MAX_TITLE_CHARS:
        raise StoreError(f"the title is {len(title):,} characters; at most {MAX_TITLE_CHARS:,} are imported")
    fields = [("the system prompt", data.get("system_prompt"))]
    for number, m in enumerate(messages, 1):
        fields += [(f"message {number}", m.get("content")), (f"message {number}'s thinking", m.get("thinking"))]
        fields += [(f"message {number}'s file {f.name!r}", f.content) for f in _attachments(m)]
        fields += [(f"message {number}'s tool call {c.name!r}", c.result) for c in _tool_calls(m)]
    for what, text in fields:
        if isinstance(text, str) and len(text) > MAX_TEXT_CHARS:
            raise StoreError(f"{what} is {len(text):,} characters; at most {MAX_TEXT_CHARS:,} are imported "
                             "(more than the longest Qwen3 context holds). Nothing was imported.")


def from_json(store: Store, text: str) -> Conversation:
    """Import an exported conversation as a new one; refuses anything that is not one, saying why."""
    data = _parse(text)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise StoreError(f"not a qwen-chat conversation export (its format is not {FORMAT!r})")
    if data.get("version") != VERSION:
        raise StoreError(f"export version {data.get('version')} is not supported (this qwen-chat reads {VERSION})")
    messages = data.get("messages")
    if not isinstance(messages, list) or not all(
            isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)
            for m in messages):
        raise StoreError("the export's messages must each have a role (user or assistant) and a text content")
    _check_sizes(data, messages)
    return _store(store, data, messages)


def _store(store: Store, data: dict[str, Any], messages: list[dict[str, Any]]) -> Conversation:
    conversation = store.create_conversation(model=str(data.get("model", "")), title=str(data.get("title") or
                                             "Imported chat"), system_prompt=str(data.get("system_prompt", "")))
    for m in messages:
        if m["role"] == "user":
            store.add_user_message(conversation.id, m["content"], files=_attachments(m))
        else:
            sampling, status = m.get("sampling"), m.get("status")
            answer = store.start_answer(conversation.id, str(m.get("model", "")), str(m.get("mode", "")),
                                        sampling if isinstance(sampling, dict) else {})
            final = status if isinstance(status, str) and status in ("stopped", "failed", "interrupted") else \
                "complete"
            store.finish_answer(answer.id, final, str(m.get("thinking", "")), m["content"], True)
            calls = _tool_calls(m)
            if calls:
                store.add_tool_calls(answer.id, calls)
    store.rename(conversation.id, str(data.get("title") or "Imported chat"))
    return store.conversation(conversation.id)


def _attachments(message: dict[str, Any]) -> tuple[Attachment, ...]:
    """A message's attached files as exported; entries that are not a name and a text are refused."""
    raw = message.get("attachments") or []
    if not isinstance(raw, list) or not all(
            isinstance(a, dict) and isinstance(a.get("name"), str) and isinstance(a.get("content"), str) for a in raw):
        raise StoreError("a message's attachments must each have a name and a text content; nothing was imported")
    return tuple(Attachment(a["name"], a["content"], int(a.get("tokens") or 0)) for a in raw)


def _tool_calls(message: dict[str, Any]) -> list[NewCall]:
    """An answer's tool calls as exported. A call that was pending or running when exported comes back
    interrupted: no import ever leaves a call waiting to run."""
    raw = message.get("tool_calls") or []
    if not isinstance(raw, list) or not all(
            isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("arguments", {}), dict)
            and isinstance(c.get("result", ""), str) for c in raw):
        raise StoreError("an answer's tool calls must each have a name, arguments (an object) and a text result; "
                         "nothing was imported")
    calls = []
    for i, c in enumerate(raw):
        status = c.get("status") if c.get("status") in TOOL_STATUSES else "interrupted"
        if status in ("pending", "running"):
            status = "interrupted"
        calls.append(NewCall(str(c.get("id") or f"call_{i}"), c["name"], c.get("arguments", {}), "", status,
                             c.get("result", ""), str(c.get("server") or "")))
    return calls
