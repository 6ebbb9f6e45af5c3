"""Conversations in SQLite (sqlite-utils): the single source of truth for history.

WAL mode lets two running instances share one file. The user's message is committed before generation
starts; an answer row is created as `streaming` with the writer's pid and saved as it grows, so after a
crash or `kill -9` the next start finds it and marks it `interrupted`, partial text intact.

The `Store` holds its parts rather than inheriting them: a `Connection` (connection.py, schema.py: the file,
its lock, transactions and migrations) as `store.connection`; message versions are read and written by
versions.py's functions on that connection. The records it returns are records.py's.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from qwen_chat.store import attachments, tool_calls, versions
from qwen_chat.store.connection import Connection
from qwen_chat.store.records import (
    STATUSES,
    Attachment,
    Conversation,
    Message,
    Persona,
    Stats,
    StoreError,
    ToolCallRecord,
    conversation_from_row,
    message_from_row,
)
from qwen_chat.store.versions import active_row, filled, supersede_from


def title_from(text: str, limit: int = 48) -> str:
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut) + "…"  # end on a whole word


class Store:
    """Thread-safe: one connection guarded by a lock (the UI, workers and the engine callback share it)."""

    def __init__(self, path: Path, busy_timeout: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        self.connection = Connection(path, busy_timeout)  # opened and migrated, or a StoreError
        self.path = self.connection.path
        self._clock = clock
        try:
            self.recovered = self.recover_interrupted()  # reads every message: a damaged page shows here
        except BaseException:
            self.close()
            raise

    def schema_version(self) -> int:
        return self.connection.schema_version()

    def close(self) -> None:
        self.connection.close()

    # -- conversations --

    def create_conversation(self, model: str = "", enable_thinking: bool = True, title: str = "New chat",
                            system_prompt: str = "") -> Conversation:
        now = self._clock()
        with self.connection.tx() as conn:
            cur = conn.execute(
                "INSERT INTO conversations (title, model, enable_thinking, system_prompt, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)", (title, model, int(enable_thinking), system_prompt, now, now))
            new_id = cur.lastrowid
        assert new_id is not None  # sqlite3 sets it after every INSERT
        return self.conversation(new_id)

    def conversation(self, conversation_id: int) -> Conversation:
        rows = self.connection.rows("SELECT * FROM conversations WHERE id = ?", (conversation_id,))
        if not rows:
            raise StoreError(f"conversation {conversation_id} no longer exists (deleted in another window?)")
        return conversation_from_row(rows[0])

    def conversations(self) -> list[Conversation]:
        rows = self.connection.rows("SELECT * FROM conversations ORDER BY updated_at DESC, id DESC")
        return [conversation_from_row(r) for r in rows]

    def data_version(self) -> int:
        """SQLite's count of commits by other connections (PRAGMA data_version): when it moved, another window
        (another process on this file) changed something."""
        return int(self.connection.rows("PRAGMA data_version")[0]["data_version"])

    def latest_conversation(self) -> Conversation | None:
        rows = self.connection.rows("SELECT * FROM conversations ORDER BY updated_at DESC, id DESC LIMIT 1")
        return conversation_from_row(rows[0]) if rows else None

    def rename(self, conversation_id: int, title: str) -> None:
        title = title.strip()
        if not title:
            raise StoreError("a conversation needs a name")
        with self.connection.tx() as conn:
            conn.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conversation_id))

    def set_thinking(self, conversation_id: int, enable_thinking: bool) -> None:
        with self.connection.tx() as conn:
            conn.execute("UPDATE conversations SET enable_thinking = ? WHERE id = ?",
                         (int(enable_thinking), conversation_id))

    def set_thinking_budget(self, conversation_id: int, budget: int | None) -> None:
        if budget is not None and budget < 0:
            raise ValueError(f"thinking budget must be 0 (none) or positive, not {budget}")
        with self.connection.tx() as conn:
            cur = conn.execute("UPDATE conversations SET thinking_budget = ? WHERE id = ?", (budget, conversation_id))
            if cur.rowcount == 0:
                raise StoreError(f"conversation {conversation_id} no longer exists (deleted in another window?)")

    def set_context_from(self, message_id: int, first_sent_id: int) -> None:
        """Record that this answer was written seeing only the messages from `first_sent_id` on."""
        with self.connection.tx() as conn:
            conn.execute("UPDATE messages SET context_from_id = ? WHERE id = ?", (first_sent_id, message_id))

    def set_tools_off(self, conversation_id: int, names: tuple[str, ...]) -> Conversation:
        with self.connection.tx() as conn:
            cur = conn.execute("UPDATE conversations SET tools_off = ? WHERE id = ?",
                               (json.dumps(sorted(set(names))), conversation_id))
            if cur.rowcount == 0:
                raise StoreError(f"conversation {conversation_id} no longer exists (deleted in another window?)")
        return self.conversation(conversation_id)

    def set_system_prompt(self, conversation_id: int, prompt: str) -> None:
        with self.connection.tx() as conn:
            cur = conn.execute("UPDATE conversations SET system_prompt = ? WHERE id = ?", (prompt, conversation_id))
            if cur.rowcount == 0:
                raise StoreError(f"conversation {conversation_id} no longer exists (deleted in another window?)")

    def delete(self, conversation_id: int) -> None:
        with self.connection.tx() as conn:
            conn.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,))
            conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # -- messages --

    def messages(self, conversation_id: int) -> list[Message]:
        """The active messages (what the model sees and the transcript shows); earlier versions left out."""
        return filled([message_from_row(r) for r in self.connection.rows(
            "SELECT * FROM messages WHERE conversation_id = ? AND superseded_by IS NULL ORDER BY id",
            (conversation_id,))], self.connection.rows)

    def message(self, message_id: int) -> Message:
        rows = self.connection.rows("SELECT * FROM messages WHERE id = ?", (message_id,))
        if not rows:
            raise StoreError(f"message {message_id} no longer exists")
        return filled([message_from_row(rows[0])], self.connection.rows)[0]

    def earlier_versions(self, message_id: int) -> list[list[Message]]:
        """Earlier versions of the turn beginning at this message, oldest first (see versions.py)."""
        return versions.earlier_versions(self.connection, message_id)

    def version_count(self, message_id: int) -> int:
        """1 + the number of earlier versions (the UI's "version n of n")."""
        return versions.version_count(self.connection, message_id)

    def versions_by_message(self, conversation_id: int) -> dict[int, int]:
        """Total versions for each active message of the conversation that has earlier ones; one query."""
        return versions.versions_by_message(self.connection, conversation_id)

    def add_user_message(self, conversation_id: int, text: str, mode: str = "",
                         files: tuple[Attachment, ...] = ()) -> Message:
        now = self._clock()
        with self.connection.tx() as conn:
            cur = conn.execute(
                "INSERT INTO messages (conversation_id, role, content, mode, created_at, updated_at)"
                " VALUES (?, 'user', ?, ?, ?, ?)", (conversation_id, text, mode, now, now))
            new_id = cur.lastrowid
            assert new_id is not None  # sqlite3 sets it after every INSERT
            attachments.insert(conn, new_id, files)  # in the same transaction: the message never lacks them
            # a conversation still called "New chat" is titled by the question (the first, unless the user named
            # it "New chat" again): known from the conversation's row, so saving a question reads no history
            conn.execute("UPDATE conversations SET title = ? WHERE id = ? AND title = 'New chat'",
                         (title_from(text), conversation_id))
            conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))
        assert new_id is not None  # sqlite3 sets it after every INSERT
        return self.message(new_id)

    def edit_user_message(self, message_id: int, text: str) -> Message:
        """Edit and resend: a new user message replaces this one and every later turn, which are kept as an
        earlier version (see earlier_versions). Returns the new message; the caller then starts the answer."""
        now = self._clock()
        with self.connection.tx() as conn:
            old = active_row(conn, message_id, "user", "edit")
            cur = conn.execute(
                "INSERT INTO messages (conversation_id, role, content, mode, created_at, updated_at)"
                " VALUES (?, 'user', ?, ?, ?, ?)", (old["conversation_id"], text, old["mode"], now, now))
            new_id = int(cur.lastrowid or 0)
            attachments.copy(conn, message_id, new_id)
            supersede_from(conn, old["conversation_id"], message_id, new_id)
            conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, old["conversation_id"]))
        return self.message(new_id)

    def start_answer(self, conversation_id: int, model: str, mode: str, sampling: dict[str, Any], *,
                     replaces: int | None = None, thinking_budget: int = 0,
                     context_from_id: int | None = None) -> Message:
        """Create the streaming answer row. With `replaces` (an active answer's id) this is a regeneration:
        that answer and anything after it become an earlier version of the new one, in the same transaction."""
        if thinking_budget < 0:
            raise ValueError(f"thinking budget must be 0 (none) or positive, not {thinking_budget}")
        now = self._clock()
        with self.connection.tx() as conn:
            if replaces is not None:
                old = active_row(conn, replaces, "assistant", "regenerate")
                if old["conversation_id"] != conversation_id:
                    raise StoreError(f"message {replaces} belongs to another conversation; cannot regenerate it here")
            cur = conn.execute(
                "INSERT INTO messages (conversation_id, role, status, model, mode, sampling, pid, thinking_budget,"
                " context_from_id, created_at, updated_at)"
                " VALUES (?, 'assistant', 'streaming', ?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, model, mode, json.dumps(sampling), os.getpid(), thinking_budget, context_from_id,
                 now, now))
            new_id = int(cur.lastrowid or 0)
            if replaces is not None:
                supersede_from(conn, conversation_id, replaces, new_id)
        return self.message(new_id)

    def save_partial(self, message_id: int, thinking: str, answer: str) -> None:
        with self.connection.tx() as conn:
            conn.execute("UPDATE messages SET thinking = ?, content = ?, updated_at = ? WHERE id = ?",
                         (thinking, answer, self._clock(), message_id))

    def finish_answer(self, message_id: int, status: str, thinking: str, answer: str, thinking_closed: bool,
                      stats: Stats = Stats(),  # noqa: B008 - frozen, so one shared default is safe
                      error: str = "", *, thinking_cut_at: int | None = None) -> None:
        if status not in STATUSES or status == "streaming":
            raise ValueError(f"bad final status {status!r}")
        now = self._clock()
        with self.connection.tx() as conn:
            conn.execute(
                "UPDATE messages SET status = ?, thinking = ?, content = ?, thinking_closed = ?, error = ?,"
                " prompt_tokens = ?, completion_tokens = ?, prompt_seconds = ?, generation_seconds = ?,"
                " tokens_per_second = ?, thinking_cut_at = ?, pid = 0, updated_at = ? WHERE id = ?",
                (status, thinking, answer, int(thinking_closed), error, stats.prompt_tokens,
                 stats.completion_tokens, stats.prompt_seconds, stats.generation_seconds,
                 stats.tokens_per_second, thinking_cut_at, now, message_id))
            conn.execute("UPDATE conversations SET updated_at = ? WHERE id = "
                         "(SELECT conversation_id FROM messages WHERE id = ?)", (now, message_id))

    # -- tool calls --

    def add_tool_calls(self, message_id: int, calls: list[tool_calls.NewCall]) -> list[ToolCallRecord]:
        """Record the calls an answer ended with (after its final save), in order."""
        with self.connection.tx() as conn:
            tool_calls.insert(conn, message_id, calls, self._clock())
        return list(self.message(message_id).tool_calls)

    def set_tool_call(self, call_id: int, status: str, result: str | None = None, *, server: str | None = None,
                      truncated: bool = False) -> ToolCallRecord:
        with self.connection.tx() as conn:
            tool_calls.update(conn, call_id, status, result, server, truncated, self._clock())
        rows = self.connection.rows("SELECT * FROM tool_calls WHERE id = ?", (call_id,))
        if not rows:
            raise StoreError(f"tool call {call_id} no longer exists (its conversation was deleted?)")
        return tool_calls.record_from_row(rows[0])

    # -- search --

    def search(self, text: str, limit: int = 50) -> list[SearchHit]:
        query = fts_query(text)
        if not query:
            return []
        rows = self.connection.rows(
            "SELECT m.conversation_id AS cid, m.id AS mid, c.title AS title, m.role AS role, "
            f"snippet(messages_fts, -1, '{MARK_START}', '{MARK_END}', '…', 12) AS snip "
            "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
            "JOIN conversations c ON c.id = m.conversation_id "
            # newest first: ranking every match by bm25 costs ~200 ms on 100,000 messages, this ~ms
            "WHERE messages_fts MATCH ? AND m.superseded_by IS NULL ORDER BY messages_fts.rowid DESC LIMIT ?",
            (query, limit))
        files = self.connection.rows(  # a question found by the files sent with it
            "SELECT m.conversation_id AS cid, m.id AS mid, c.title AS title, m.role AS role, "
            f"a.name || ': ' || snippet(attachments_fts, 1, '{MARK_START}', '{MARK_END}', '…', 12) AS snip "
            "FROM attachments_fts JOIN attachments a ON a.id = attachments_fts.rowid "
            "JOIN messages m ON m.id = a.message_id JOIN conversations c ON c.id = m.conversation_id "
            "WHERE attachments_fts MATCH ? AND m.superseded_by IS NULL ORDER BY a.id DESC LIMIT ?", (query, limit))
        results = self.connection.rows(  # an answer found by what its tools returned
            "SELECT m.conversation_id AS cid, m.id AS mid, c.title AS title, m.role AS role, "
            f"t.name || ': ' || snippet(tool_calls_fts, -1, '{MARK_START}', '{MARK_END}', '…', 12) AS snip "
            "FROM tool_calls_fts JOIN tool_calls t ON t.id = tool_calls_fts.rowid "
            "JOIN messages m ON m.id = t.message_id JOIN conversations c ON c.id = m.conversation_id "
            "WHERE tool_calls_fts MATCH ? AND m.superseded_by IS NULL ORDER BY t.id DESC LIMIT ?", (query, limit))
        hits = sorted(rows + files + results, key=lambda r: r["mid"], reverse=True)[:limit]
        return [SearchHit(r["cid"], r["mid"], r["title"], r["role"], r["snip"]) for r in hits]

    def recover_interrupted(self) -> int:
        """Mark answers whose writing process is gone as interrupted; returns how many."""
        rows = self.connection.rows("SELECT id, pid FROM messages WHERE status = 'streaming'")
        dead = [r["id"] for r in rows if r["pid"] != os.getpid() and not _alive(r["pid"])]
        calls = [i for i, pid in tool_calls.unfinished(self.connection.rows) if pid != os.getpid() and not _alive(pid)]
        if dead or calls:
            with self.connection.tx() as conn:
                conn.executemany("UPDATE messages SET status = 'interrupted', pid = 0 WHERE id = ?",
                                 [(i,) for i in dead])
                tool_calls.mark_interrupted(conn, calls)
        return len(dead) + len(calls)

    # -- personas (saved system prompts) --

    def personas(self) -> list[Persona]:
        return [Persona(r["id"], r["name"], r["prompt"])
                for r in self.connection.rows("SELECT id, name, prompt FROM personas ORDER BY name, id")]

    def save_persona(self, name: str, prompt: str) -> Persona:
        """Add a persona, or replace the prompt of the one with this name (any letter case)."""
        name, prompt = name.strip(), prompt.strip()
        if not name:
            raise StoreError("a persona needs a name")
        if not prompt:
            raise StoreError(f"persona {name!r} needs a system prompt (it is empty)")
        now = self._clock()
        with self.connection.tx() as conn:
            # the latest spelling of the name wins, so renaming "coder" to "Coder" works by saving it again
            conn.execute(
                "INSERT INTO personas (name, prompt, created_at, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET name = excluded.name, prompt = excluded.prompt,"
                " updated_at = excluded.updated_at", (name, prompt, now, now))
            row = conn.execute("SELECT id, name, prompt FROM personas WHERE name = ?", (name,)).fetchone()
        return Persona(*row)

    def delete_persona(self, name: str) -> bool:
        """Delete the persona with this name (any letter case); False if there was none."""
        with self.connection.tx() as conn:
            return conn.execute("DELETE FROM personas WHERE name = ?", (name.strip(),)).rowcount > 0


@dataclass(frozen=True)
class SearchHit:
    conversation_id: int
    message_id: int
    title: str
    role: str
    snippet: str  # the match is between MARK_START and MARK_END


MARK_START, MARK_END = "\x02", "\x03"  # never typed by users; the UI turns them into highlighting


def fts_query(text: str) -> str:
    """Every word must appear (prefix match on the last one): user text never reaches FTS5 as syntax."""
    words = [w.replace('"', '""') for w in text.split()]
    if not words:
        return ""
    quoted = [f'"{w}"' for w in words]
    quoted[-1] += "*"
    return " ".join(quoted)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
