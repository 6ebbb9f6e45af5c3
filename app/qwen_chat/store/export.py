"""Conversations out to Markdown or JSON (thinking included or not), and JSON back in."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from qwen_chat.store.database import Store
from qwen_chat.store.records import Conversation, StoreError

FORMAT = "qwen-chat-conversation"
VERSION = 1


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")


def to_json(store: Store, conversation: Conversation, thinking: bool = True) -> str:
    messages = []
    for m in store.messages(conversation.id):
        item: dict[str, Any] = {"role": m.role, "content": m.content, "status": m.status,
                                "created_at": _when(m.created_at)}
        if m.role == "assistant":
            item.update(model=m.model, mode=m.mode, sampling=m.sampling, completion_tokens=m.completion_tokens,
                        tokens_per_second=round(m.tokens_per_second, 2))
            if thinking and m.thinking:
                item["thinking"] = m.thinking
        messages.append(item)
    return json.dumps({"format": FORMAT, "version": VERSION, "title": conversation.title,
                       "model": conversation.model, "system_prompt": conversation.system_prompt,
                       "created_at": _when(conversation.created_at), "messages": messages},
                      ensure_ascii=False, indent=2) + "\n"


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
    return "\n".join(lines)


def from_json(store: Store, text: str) -> Conversation:
    """Import an exported conversation as a new one; refuses anything that is not one, saying why."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StoreError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise StoreError(f"not a qwen-chat conversation export (its format is not {FORMAT!r})")
    if data.get("version") != VERSION:
        raise StoreError(f"export version {data.get('version')} is not supported (this qwen-chat reads {VERSION})")
    messages = data.get("messages")
    if not isinstance(messages, list) or not all(
            isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)
            for m in messages):
        raise StoreError("the export's messages must each have a role (user or assistant) and a text content")
    conversation = store.create_conversation(model=str(data.get("model", "")), title=str(data.get("title") or
                                             "Imported chat"), system_prompt=str(data.get("system_prompt", "")))
    for m in messages:
        if m["role"] == "user":
            store.add_user_message(conversation.id, m["content"])
        else:
            answer = store.start_answer(conversation.id, str(m.get("model", "")), str(m.get("mode", "")),
                                        m.get("sampling") if isinstance(m.get("sampling"), dict) else {})
            status = m.get("status") if m.get("status") in ("complete", "stopped", "failed", "interrupted") else \
                "complete"
            store.finish_answer(answer.id, status, str(m.get("thinking", "")), m["content"], True)
    store.rename(conversation.id, str(data.get("title") or "Imported chat"))
    return store.conversation(conversation.id)
