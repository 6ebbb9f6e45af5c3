"""Tool calls in the database: written when an answer ends with them, updated as each is approved and run,
read back with their message. A call left pending or running by a process that is gone is marked interrupted
on the next start, like a streaming answer."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from qwen_chat.store.children import Rows, with_children
from qwen_chat.store.records import TOOL_STATUSES, Message, ToolCallRecord

NEVER_RAN = "The app ended while this call waited for approval; it did not run."
CUT_OFF = "The app ended while this call was running; it may or may not have finished."


@dataclasses.dataclass(frozen=True)
class NewCall:
    call_id: str
    name: str
    arguments: dict[str, Any]
    raw: str = ""
    status: str = "pending"
    result: str = ""  # set now for a call that can never run (malformed, unknown tool): its error
    server: str = ""


def insert(conn: sqlite3.Connection, message_id: int, calls: Iterable[NewCall], now: float) -> None:
    rows = []
    for position, call in enumerate(calls):
        _check(call.status)
        pid = os.getpid() if call.status in ("pending", "running") else 0
        rows.append((message_id, position, call.call_id, call.name, call.server,
                     json.dumps(call.arguments, ensure_ascii=False), call.raw, call.status, call.result, pid, now, now))
    conn.executemany("INSERT INTO tool_calls (message_id, position, call_id, name, server, arguments, raw, status,"
                     " result, pid, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def update(conn: sqlite3.Connection, call_id: int, status: str, result: str | None, server: str | None,
           truncated: bool, now: float) -> None:
    _check(status)
    pid = os.getpid() if status in ("pending", "running") else 0
    conn.execute("UPDATE tool_calls SET status = ?, result = COALESCE(?, result), server = COALESCE(?, server),"
                 " truncated = ?, pid = ?, updated_at = ? WHERE id = ?",
                 (status, result, server, int(truncated), pid, now, call_id))


def _check(status: str) -> None:
    if status not in TOOL_STATUSES:
        raise ValueError(f"bad tool call status {status!r}")


def record_from_row(row: dict[str, Any]) -> ToolCallRecord:
    return ToolCallRecord(row["id"], row["message_id"], row["position"], row["call_id"], row["name"], row["server"],
                          json.loads(row["arguments"] or "{}"), row["raw"], row["status"], row["result"],
                          bool(row["truncated"]))


def with_tool_calls(messages: list[Message], rows: Rows) -> list[Message]:
    """The messages with their tool calls filled in (one query for all of them)."""
    return with_children(messages, "assistant", rows, "tool_calls", "*", record_from_row, "tool_calls")


def unfinished(rows: Callable[[str, tuple[Any, ...]], list[dict[str, Any]]]) -> list[tuple[int, int]]:
    """(id, pid) of every call still pending or running."""
    return [(r["id"], r["pid"]) for r in rows("SELECT id, pid FROM tool_calls WHERE status IN ('pending', 'running')",
                                              ())]


def mark_interrupted(conn: sqlite3.Connection, ids: list[int]) -> None:
    conn.executemany("UPDATE tool_calls SET result = CASE status WHEN 'pending' THEN ? ELSE ? END,"
                     " status = 'interrupted', pid = 0 WHERE id = ?", [(NEVER_RAN, CUT_OFF, i) for i in ids])
