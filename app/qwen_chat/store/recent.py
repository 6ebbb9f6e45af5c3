"""The newest messages of a conversation, read newest first and only as far back as one answer's prompt can reach.

A prompt holds only the newest turns that fit the context, but an imported conversation can hold 28 MB: reading all
of it for every answer (and rendering and tokenizing it after) took minutes. Here the walk back adds up sizes only
(SQLite measures each text without handing it to Python) and stops at the first question where the budget is
reached; then only the messages from there on are read whole, in the same query.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from qwen_chat.store.connection import Connection
from qwen_chat.store.records import Message, message_from_row
from qwen_chat.store.versions import filled

_ACTIVE = "conversation_id = ? AND superseded_by IS NULL"
_NO_LIMIT = 2**63 - 1  # above every id (SQLite's largest integer)
# One statement reads a window: `walk` adds up the sizes newest first (SQLite measures each text without handing it
# to Python, and the scan ends at the start: the running sum streams out newest first, in the window's order, and
# only its first match is taken; an ORDER BY there would sort, so read, the whole history first), `start`
# is the first question at which they reach the budget (0: none, all of them), with whether older messages exist
# and how many questions lie before it; then the messages from there on are read whole, each answer with the number
# of questions from where its view began up to the start. A message's size is as the prompt shows it: its text and
# the files sent with it, in UTF-8 bytes (a token covers whole bytes); what a tool returned is left out, so a window
# is if anything larger than this counts.
_WINDOW = (
    "WITH walk AS (SELECT m.id, m.role, SUM(length(CAST(m.content AS BLOB)) + COALESCE((SELECT"
    " SUM(length(CAST(a.content AS BLOB))) FROM attachments a WHERE a.message_id = m.id), 0))"
    " OVER (ORDER BY m.id DESC ROWS UNBOUNDED PRECEDING) AS used FROM messages m"
    " WHERE m.conversation_id = ?1 AND m.superseded_by IS NULL AND m.id < ?2),"
    " first AS MATERIALIZED (SELECT COALESCE((SELECT id FROM walk WHERE role = 'user' AND used >= ?3 LIMIT 1),"
    " 0) AS id),"
    " start AS MATERIALIZED (SELECT first.id AS id, EXISTS (SELECT 1 FROM messages o WHERE o.conversation_id = ?1"
    " AND o.superseded_by IS NULL AND o.id < first.id) AS window_cut, (SELECT COUNT(*) FROM messages q"
    " WHERE q.conversation_id = ?1 AND q.superseded_by IS NULL AND q.role = 'user' AND q.id < first.id)"
    " AS window_asked FROM first)"
    " SELECT m.*, start.window_cut, start.window_asked, CASE WHEN m.role = 'assistant' AND m.context_from_id"
    " IS NOT NULL THEN (SELECT COUNT(*) FROM messages q WHERE q.conversation_id = ?1 AND q.superseded_by IS NULL"
    " AND q.role = 'user' AND q.id >= m.context_from_id AND q.id < start.id) END AS window_asked_from"
    " FROM start JOIN messages m ON m.conversation_id = ?1 AND m.superseded_by IS NULL AND m.id >= start.id"
    " AND m.id < ?2 ORDER BY m.id")


@dataclass(frozen=True)
class Recent:
    messages: list[Message]  # active messages, oldest first, with their files and tool calls
    cut: bool  # older active messages exist before messages[0]: they were left out, over the budget
    asked: int = 0  # active questions before messages[0]
    asked_from: dict[int, int] = field(default_factory=dict)  # a view's first message id (an answer's
    # context_from_id) -> the active questions from there up to, not including, messages[0]

    def questions_since(self, since: int | None) -> int:
        """How many active questions lie from message `since` (None: the first; else an answer's context_from_id
        in the window) up to, not including, the window's first message."""
        return self.asked if since is None else self.asked_from[since]


def _never() -> bool:
    return False


def recent(connection: Connection, conversation_id: int, budget: int | None, before: int | None = None,
           stopped: Callable[[], bool] = _never) -> Recent | None:
    """The active messages (before message `before` only, for a regeneration) from the newest back to the first
    question at which their sizes add up to `budget` bytes: every message after the last question, then whole
    turns. `budget` None: all of them. One query reads them (and what the trim marker counts); None when
    `stopped()` turned true meanwhile."""
    below = _NO_LIMIT if before is None else before
    with connection.lock:  # one state from the window to its files (a message saved meanwhile waits)
        rows = connection.rows(_WINDOW, (conversation_id, below, budget))
        if stopped():
            return None
        messages = filled([message_from_row(r) for r in rows], connection.rows)
    if not rows:
        return Recent([], False)
    asked_from = {int(r["context_from_id"]): int(r["window_asked_from"]) for r in rows
                  if r["window_asked_from"] is not None}
    return Recent(messages, bool(rows[0]["window_cut"]), int(rows[0]["window_asked"]), asked_from)


def _read(connection: Connection, conversation_id: int, first: int, below: int) -> list[Message]:
    messages = [message_from_row(r) for r in connection.rows(
        f"SELECT * FROM messages WHERE {_ACTIVE} AND id >= ? AND id < ? ORDER BY id", (conversation_id, first, below))]
    return filled(messages, connection.rows)


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
