"""Attachments in the database: written with their message, read back with it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from qwen_chat.store.children import Rows, with_children
from qwen_chat.store.records import Attachment, Message


def insert(conn: sqlite3.Connection, message_id: int, attachments: Iterable[Attachment]) -> None:
    conn.executemany("INSERT INTO attachments (message_id, position, name, content, tokens) VALUES (?, ?, ?, ?, ?)",
                     [(message_id, i, a.name, a.content, a.tokens) for i, a in enumerate(attachments)])


def copy(conn: sqlite3.Connection, from_message: int, to_message: int) -> None:
    """An edited question keeps the files its first version was sent with."""
    conn.execute("INSERT INTO attachments (message_id, position, name, content, tokens) "
                 "SELECT ?, position, name, content, tokens FROM attachments WHERE message_id = ?",
                 (to_message, from_message))


def with_attachments(messages: list[Message], rows: Rows) -> list[Message]:
    """The messages with their attachments filled in (one query for all of them)."""
    return with_children(messages, "user", rows, "attachments", "message_id, name, content, tokens",
                         lambda row: Attachment(row["name"], row["content"], row["tokens"]), "attachments")
