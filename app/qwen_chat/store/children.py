"""Rows that belong to a message (its attachments, its tool calls), read for a list of messages at once."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from qwen_chat.store.records import Message

Rows = Callable[[str, tuple[Any, ...]], list[dict[str, Any]]]


def with_children(messages: list[Message], role: str, rows: Rows, table: str, columns: str,
                  build: Callable[[dict[str, Any]], object], field: str) -> list[Message]:
    """The messages with `field` filled from `table` (one query for all of them, in `position` order), for the
    messages of `role` only."""
    ids = [m.id for m in messages if m.role == role]
    if not ids:
        return messages
    found: dict[int, list[object]] = defaultdict(list)
    marks = ", ".join("?" * len(ids))
    for row in rows(f"SELECT {columns} FROM {table} WHERE message_id IN ({marks}) ORDER BY message_id, position",
                    tuple(ids)):
        found[row["message_id"]].append(build(row))
    return [_filled(m, field, found[m.id]) if m.id in found else m for m in messages]


def _filled(message: Message, field: str, children: list[object]) -> Message:
    change: dict[str, Any] = {field: tuple(children)}
    return dataclasses.replace(message, **change)
