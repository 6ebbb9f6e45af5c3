"""Attachments in the database: written with their message, read back with it."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from qwen_chat.store.records import Attachment, Message


def insert(conn: sqlite3.Connection, message_id: int, attachments: Iterable[Attachment]) -> None:
    conn.executemany("INSERT INTO attachments (message_id, position, name, content, tokens) VALUES (?, ?, ?, ?, ?)",
                     [(message_id, i, a.name, a.content, a.tokens) for i, a in enumerate(attachments)])


def copy(conn: sqlite3.Connection, from_message: int, to_message: int) -> None:
    """An edited question keeps the files its first version was sent with."""
    conn.execute("INSERT INTO attachments (message_id, position, name, content, tokens) "
                 "SELECT ?, position, name, content, tokens FROM attachments WHERE message_id = ?",
                 (to_message, from_message))


def with_attachments(messages: list[Message], rows: Callable[[str, tuple[Any, ...]], list[dict[str, Any]]]) \
        -> list[Message]:
    """The messages with their attachments filled in (one query for all of them)."""
    ids = [m.id for m in messages if m.role == "user"]
    if not ids:
        return messages
    found: dict[int, list[Attachment]] = defaultdict(list)
    marks = ", ".join("?" * len(ids))
    for row in rows(f"SELECT message_id, name, content, tokens FROM attachments WHERE message_id IN ({marks}) "
                    "ORDER BY message_id, position", tuple(ids)):
        found[row["message_id"]].append(Attachment(row["name"], row["content"], row["tokens"]))
    return [dataclasses.replace(m, attachments=tuple(found[m.id])) if m.id in found else m for m in messages]
