"""The newest messages of a conversation, read newest first and only as far back as one answer's prompt can reach.

A prompt holds only the newest turns that fit the context, but an imported conversation can hold 28 MB: reading all
of it for every answer (and rendering and tokenizing it after) took minutes. Here the walk back reads sizes only
(SQLite measures each text without handing it to Python), a page at a time, and stops at the first question where
the budget is reached; then only the messages from there on are read whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from qwen_chat.store.connection import Connection
from qwen_chat.store.records import Message, message_from_row
from qwen_chat.store.versions import filled

PAGE = 256  # sizes read per query on the walk back: one query covers most windows, a stop is seen between pages
_ACTIVE = "conversation_id = ? AND superseded_by IS NULL"
_NO_LIMIT = 2**63 - 1  # above every id (SQLite's largest integer)
# a message's size as the prompt shows it: its text and the files sent with it, in UTF-8 bytes (a token covers
# whole bytes); what a tool returned is left out, so a window is if anything larger than this counts
_SIZES = ("SELECT m.id, m.role, length(CAST(m.content AS BLOB)) + COALESCE((SELECT SUM(length(CAST(a.content AS BLOB)))"
          " FROM attachments a WHERE a.message_id = m.id), 0) AS size FROM messages m"
          " WHERE m.conversation_id = ? AND m.superseded_by IS NULL AND m.id < ? ORDER BY m.id DESC LIMIT ?")


@dataclass(frozen=True)
class Recent:
    messages: list[Message]  # active messages, oldest first, with their files and tool calls
    cut: bool  # older active messages exist before messages[0]: they were left out, over the budget


def _never() -> bool:
    return False


def recent(connection: Connection, conversation_id: int, budget: int | None, before: int | None = None,
           stopped: Callable[[], bool] = _never) -> Recent | None:
    """The active messages (before message `before` only, for a regeneration) from the newest back to the first
    question at which their sizes add up to `budget` bytes: every message after the last question, then whole
    turns. `budget` None: all of them. None when `stopped()` turned true between two queries."""
    below = _NO_LIMIT if before is None else before
    with connection.lock:  # one state from the walk to the read (a message saved meanwhile waits)
        if budget is not None:
            for rows in _pages(connection, conversation_id, below):
                first = _start_in(rows, budget)
                if stopped():
                    return None
                if first is not None:
                    older = connection.rows(f"SELECT 1 FROM messages WHERE {_ACTIVE} AND id < ? LIMIT 1",
                                            (conversation_id, first))
                    return Recent(_read(connection, conversation_id, first, below), bool(older))
                budget -= sum(int(r["size"]) for r in rows)
        return Recent(_read(connection, conversation_id, 0, below), False)


def _pages(connection: Connection, conversation_id: int, below: int) -> Iterator[list[dict[str, Any]]]:
    while True:
        rows = connection.rows(_SIZES, (conversation_id, below, PAGE))
        if rows:
            yield rows
        if len(rows) < PAGE:
            return
        below = int(rows[-1]["id"])


def _start_in(rows: list[dict[str, Any]], budget: int) -> int | None:
    """The id of the first question (walking back through `rows`) at which `budget` is used up, or None."""
    for row in rows:
        budget -= int(row["size"])
        if row["role"] == "user" and budget <= 0:
            return int(row["id"])
    return None


def _read(connection: Connection, conversation_id: int, first: int, below: int) -> list[Message]:
    messages = [message_from_row(r) for r in connection.rows(
        f"SELECT * FROM messages WHERE {_ACTIVE} AND id >= ? AND id < ? ORDER BY id", (conversation_id, first, below))]
    return filled(messages, connection.rows)


def questions_between(connection: Connection, conversation_id: int, since: int | None, until: int) -> int:
    """How many active questions lie from message `since` (None: the first) up to, not including, `until`."""
    rows = connection.rows(f"SELECT COUNT(*) AS n FROM messages WHERE {_ACTIVE} AND role = 'user' AND id >= ?"
                           " AND id < ?", (conversation_id, since or 0, until))
    return int(rows[0]["n"])


def questions_with(connection: Connection, conversation_id: int, needles: tuple[str, ...]) -> Iterator[str]:
    """The text of each active question that contains one of `needles`, newest first (SQLite does the search, so
    a long history is not handed to Python to find the few that match)."""
    found = " OR ".join("instr(content, ?) > 0" for _ in needles)
    below = _NO_LIMIT
    while True:
        rows = connection.rows(f"SELECT id, content FROM messages WHERE {_ACTIVE} AND role = 'user' AND id < ?"
                               f" AND ({found}) ORDER BY id DESC LIMIT 16", (conversation_id, below, *needles))
        yield from (str(r["content"]) for r in rows)
        if len(rows) < 16:
            return
        below = int(rows[-1]["id"])


def since_last_question(connection: Connection, conversation_id: int) -> list[Message]:
    """The last active question and every active message after it (an answer and the steps of its tool loop)."""
    rows = connection.rows(f"SELECT MAX(id) AS id FROM messages WHERE {_ACTIVE} AND role = 'user'", (conversation_id,))
    last = rows[0]["id"] if rows else None
    return _read(connection, conversation_id, 0 if last is None else int(last), _NO_LIMIT)
