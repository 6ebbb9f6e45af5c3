"""Message versions. Edit-and-resend and regenerate never delete: the replaced run of messages points at the
message that replaced it (`superseded_by`), so each turn keeps a chain of earlier versions. Read here from the
store's connection (the `Store` answers `earlier_versions` and the rest by calling these); written inside the
`Store`'s own transactions with `active_row` and `supersede_from`.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from qwen_chat.store import attachments, tool_calls
from qwen_chat.store.children import Rows
from qwen_chat.store.connection import Connection
from qwen_chat.store.records import Message, StoreError, message_from_row


def filled(messages: list[Message], rows: Rows) -> list[Message]:
    """Messages with their attachments and tool calls (a version is read whole, like an active message)."""
    return tool_calls.with_tool_calls(attachments.with_attachments(messages, rows), rows)


def earlier_versions(connection: Connection, message_id: int) -> list[list[Message]]:
    """Earlier versions of the turn beginning at this message, oldest first: each is the run of messages
    one edit/regeneration replaced. Empty if the message never replaced anything."""
    versions: list[list[Message]] = []
    with connection.lock:  # a chain only ever grows at its new end, so walking it query by query is safe
        current = message_id
        while True:
            run = filled([message_from_row(r) for r in connection.rows(
                "SELECT * FROM messages WHERE superseded_by = ? ORDER BY id", (current,))], connection.rows)
            if not run:
                break
            versions.append(run)
            current = run[0].id  # that run's first message may itself have replaced an older run
    versions.reverse()
    return versions


def version_count(connection: Connection, message_id: int) -> int:
    """1 + the number of earlier versions (the UI's "version n of n")."""
    count, current = 1, message_id
    with connection.lock:
        while True:
            first = connection.rows("SELECT MIN(id) AS id FROM messages WHERE superseded_by = ?", (current,))[0]["id"]
            if first is None:
                return count
            count, current = count + 1, first


def versions_by_message(connection: Connection, conversation_id: int) -> dict[int, int]:
    """Total versions for each active message of the conversation that has earlier ones; one query."""
    first_replaced: dict[int, int] = {}  # replacing id -> first id of the run it replaced
    superseded: set[int] = set()
    for r in connection.rows("SELECT id, superseded_by FROM messages WHERE conversation_id = ?"
                             " AND superseded_by IS NOT NULL ORDER BY id", (conversation_id,)):
        superseded.add(r["id"])
        first_replaced.setdefault(r["superseded_by"], r["id"])  # ids ascend: the first seen is the run's start
    counts: dict[int, int] = {}
    for replacer in first_replaced:
        if replacer in superseded:
            continue  # itself an earlier version: not shown with a marker
        count, current = 1, replacer
        while current in first_replaced:
            count, current = count + 1, first_replaced[current]
        counts[replacer] = count
    return counts


def active_row(conn: sqlite3.Connection, message_id: int, role: str, action: str) -> dict[str, Any]:
    """The row of an active message with this role, else a StoreError saying why it cannot be changed."""
    row = conn.execute("SELECT conversation_id, role, mode, superseded_by FROM messages WHERE id = ?",
                       (message_id,)).fetchone()
    if row is None:
        raise StoreError(f"message {message_id} no longer exists (deleted in another window?)")
    found = {"conversation_id": row[0], "role": row[1], "mode": row[2], "superseded_by": row[3]}
    if found["role"] != role:
        raise StoreError(f"cannot {action} message {message_id}: it is a {found['role']} message, not a {role} one")
    if found["superseded_by"] is not None:
        raise StoreError(f"cannot {action} message {message_id}: it is an earlier version "
                         f"(replaced by message {found['superseded_by']})")
    return found


def supersede_from(conn: sqlite3.Connection, conversation_id: int, first_id: int, new_id: int) -> None:
    """Mark the active messages from first_id on (all but new_id) as replaced by new_id."""
    conn.execute("UPDATE messages SET superseded_by = ? WHERE conversation_id = ? AND id >= ? AND id != ?"
                 " AND superseded_by IS NULL", (new_id, conversation_id, first_id, new_id))
