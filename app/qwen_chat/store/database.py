"""Conversations in SQLite (sqlite-utils): the single source of truth for history.

WAL mode lets two running instances share one file. The user's message is committed before generation
starts; an answer row is created as `streaming` with the writer's pid and saved as it grows, so after a
crash or `kill -9` the next start finds it and marks it `interrupted`, partial text intact.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import sqlite_utils

STATUSES = ("complete", "streaming", "stopped", "failed", "interrupted")


class StoreError(Exception):
    """The database cannot be used right now; the message says why and what to do."""


# Each step moves the schema from version i to i+1. Never edit a released step; add a new one.
_MIGRATIONS: list[str] = [
    """
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        title TEXT NOT NULL,
        model TEXT NOT NULL DEFAULT '',
        enable_thinking INTEGER NOT NULL DEFAULT 1,
        system_prompt TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
        content TEXT NOT NULL DEFAULT '',
        thinking TEXT NOT NULL DEFAULT '',
        thinking_closed INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'complete',
        error TEXT NOT NULL DEFAULT '',
        model TEXT NOT NULL DEFAULT '',
        mode TEXT NOT NULL DEFAULT '',
        sampling TEXT NOT NULL DEFAULT '{}',
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        prompt_seconds REAL NOT NULL DEFAULT 0,
        generation_seconds REAL NOT NULL DEFAULT 0,
        tokens_per_second REAL NOT NULL DEFAULT 0,
        pid INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
    CREATE INDEX conversations_by_update ON conversations(updated_at);
    """,
    # 2: full-text search over answers, questions and thinking (FTS5, kept in step by triggers)
    """
    CREATE VIRTUAL TABLE messages_fts USING fts5(content, thinking, content='messages', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2');
    INSERT INTO messages_fts(rowid, content, thinking) SELECT id, content, thinking FROM messages;
    CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, content, thinking) VALUES (new.id, new.content, new.thinking);
    END;
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content, thinking)
            VALUES ('delete', old.id, old.content, old.thinking);
    END;
    CREATE TRIGGER messages_fts_update AFTER UPDATE OF content, thinking ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content, thinking)
            VALUES ('delete', old.id, old.content, old.thinking);
        INSERT INTO messages_fts(rowid, content, thinking) VALUES (new.id, new.content, new.thinking);
    END;
    """,
    # 3: message versions (edit and resend, regenerate), thinking budget and context fields, personas.
    # ADD COLUMN rewrites nothing, so this is instant even on a large history; old rows come out active.
    """
    ALTER TABLE messages ADD COLUMN superseded_by INTEGER;
    ALTER TABLE messages ADD COLUMN thinking_budget INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN thinking_cut_at INTEGER;
    ALTER TABLE messages ADD COLUMN context_from_id INTEGER;
    CREATE INDEX messages_by_superseded ON messages(superseded_by) WHERE superseded_by IS NOT NULL;
    CREATE TABLE personas (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE COLLATE NOCASE,
        prompt TEXT NOT NULL,
        created_at REAL,
        updated_at REAL
    );
    """,
    # 4: a conversation's own thinking budget (/budget N); NULL: the preset's default
    """
    ALTER TABLE conversations ADD COLUMN thinking_budget INTEGER;
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    model: str
    enable_thinking: bool
    system_prompt: str
    created_at: float
    updated_at: float
    thinking_budget: int | None = None  # set with /budget; None: the sampling preset's default


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    role: str
    content: str
    thinking: str
    thinking_closed: bool
    status: str
    error: str
    model: str
    mode: str
    sampling: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    prompt_seconds: float
    generation_seconds: float
    tokens_per_second: float
    created_at: float
    superseded_by: int | None = None  # None: active; else the id of the message that replaced it
    thinking_budget: int = 0  # 0: no budget
    thinking_cut_at: int | None = None  # offset in `thinking` where the budget's stop instruction begins
    context_from_id: int | None = None  # None: whole conversation sent; else the oldest message still sent


@dataclass(frozen=True)
class Persona:
    id: int
    name: str
    prompt: str


@dataclass(frozen=True)
class Stats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_seconds: float = 0.0
    generation_seconds: float = 0.0
    tokens_per_second: float = 0.0


def _conversation(row: dict[str, Any]) -> Conversation:
    return Conversation(row["id"], row["title"], row["model"], bool(row["enable_thinking"]),
                        row["system_prompt"], row["created_at"], row["updated_at"], row["thinking_budget"])


def _message(row: dict[str, Any]) -> Message:
    return Message(
        id=row["id"], conversation_id=row["conversation_id"], role=row["role"], content=row["content"],
        thinking=row["thinking"], thinking_closed=bool(row["thinking_closed"]), status=row["status"],
        error=row["error"], model=row["model"], mode=row["mode"], sampling=json.loads(row["sampling"] or "{}"),
        prompt_tokens=row["prompt_tokens"], completion_tokens=row["completion_tokens"],
        prompt_seconds=row["prompt_seconds"], generation_seconds=row["generation_seconds"],
        tokens_per_second=row["tokens_per_second"], created_at=row["created_at"],
        superseded_by=row["superseded_by"], thinking_budget=row["thinking_budget"],
        thinking_cut_at=row["thinking_cut_at"], context_from_id=row["context_from_id"])


def title_from(text: str, limit: int = 48) -> str:
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut) + "…"  # end on a whole word


class Store:
    """Thread-safe: one connection guarded by a lock (the UI, workers and the engine callback share it)."""

    def __init__(self, path: Path, busy_timeout: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=busy_timeout, check_same_thread=False,
                                   isolation_level=None)
            self.db = sqlite_utils.Database(conn)
            conn.execute("PRAGMA foreign_keys = ON")
            self.db.enable_wal()
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(_explain(self.path, exc)) from exc
        self.recovered = self.recover_interrupted()

    # -- plumbing --

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self.db.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StoreError(_explain(self.path, exc)) from exc
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            try:
                return list(self.db.query(sql, params))
            except sqlite3.DatabaseError as exc:
                raise StoreError(_explain(self.path, exc)) from exc

    def _migrate(self) -> None:
        with self._lock:
            version = self.db.conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} was written by a newer qwen-chat (schema {version}, this one knows "
                    f"{SCHEMA_VERSION}). Upgrade qwen-chat; your conversations are untouched.")
            for step in range(version, SCHEMA_VERSION):
                with self._tx() as conn:
                    # executescript would commit on its own; run the statements inside our transaction
                    for statement in _statements(_MIGRATIONS[step]):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {step + 1}")

    def schema_version(self) -> int:
        with self._lock:
            return int(self.db.conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    # -- conversations --

    def create_conversation(self, model: str = "", enable_thinking: bool = True, title: str = "New chat",
                            system_prompt: str = "") -> Conversation:
        now = self._clock()
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO conversations (title, model, enable_thinking, system_prompt, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)", (title, model, int(enable_thinking), system_prompt, now, now))
            new_id = cur.lastrowid
        return self.conversation(int(new_id))

    def conversation(self, conversation_id: int) -> Conversation:
        rows = self._rows("SELECT * FROM conversations WHERE id = ?", (conversation_id,))
        if not rows:
            raise StoreError(f"conversation {conversation_id} no longer exists (deleted in another window?)")
        return _conversation(rows[0])

    def conversations(self) -> list[Conversation]:
        return [_conversation(r) for r in self._rows("SELECT * FROM conversations ORDER BY updated_at DESC, id DESC")]

    def latest_conversation(self) -> Conversation | None:
        rows = self._rows("SELECT * FROM conversations ORDER BY updated_at DESC, id DESC LIMIT 1")
        return _conversation(rows[0]) if rows else None

    def rename(self, conversation_id: int, title: str) -> None:
        title = title.strip()
        if not title:
            raise StoreError("a conversation needs a name")
        with self._tx() as conn:
            conn.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conversation_id))

    def set_thinking(self, conversation_id: int, enable_thinking: bool) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE conversations SET enable_thinking = ? WHERE id = ?",
                         (int(enable_thinking), conversation_id))

    def set_thinking_budget(self, conversation_id: int, budget: int | None) -> None:
        if budget is not None and budget < 0:
            raise ValueError(f"thinking budget must be 0 (none) or positive, not {budget}")
        with self._tx() as conn:
            cur = conn.execute("UPDATE conversations SET thinking_budget = ? WHERE id = ?", (budget, conversation_id))
            if cur.rowcount == 0:
                raise StoreError(f"conversation {conversation_id} no longer exists (deleted in another window?)")

    def set_context_from(self, message_id: int, first_sent_id: int) -> None:
        """Record that this answer was written seeing only the messages from `first_sent_id` on."""
        with self._tx() as conn:
            conn.execute("UPDATE messages SET context_from_id = ? WHERE id = ?", (first_sent_id, message_id))

    def set_system_prompt(self, conversation_id: int, prompt: str) -> None:
        with self._tx() as conn:
            cur = conn.execute("UPDATE conversations SET system_prompt = ? WHERE id = ?", (prompt, conversation_id))
            if cur.rowcount == 0:
                raise StoreError(f"conversation {conversation_id} no longer exists (deleted in another window?)")

    def delete(self, conversation_id: int) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,))
            conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # -- messages --

    def messages(self, conversation_id: int) -> list[Message]:
        """The active messages (what the model sees and the transcript shows); earlier versions left out."""
        return [_message(r) for r in self._rows(
            "SELECT * FROM messages WHERE conversation_id = ? AND superseded_by IS NULL ORDER BY id",
            (conversation_id,))]

    def message(self, message_id: int) -> Message:
        rows = self._rows("SELECT * FROM messages WHERE id = ?", (message_id,))
        if not rows:
            raise StoreError(f"message {message_id} no longer exists")
        return _message(rows[0])

    def add_user_message(self, conversation_id: int, text: str, mode: str = "") -> Message:
        now = self._clock()
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO messages (conversation_id, role, content, mode, created_at, updated_at)"
                " VALUES (?, 'user', ?, ?, ?, ?)", (conversation_id, text, mode, now, now))
            new_id = cur.lastrowid
            first = conn.execute("SELECT COUNT(*) FROM messages WHERE conversation_id = ? AND role = 'user'",
                                 (conversation_id,)).fetchone()[0] == 1
            if first:
                conn.execute("UPDATE conversations SET title = ? WHERE id = ? AND title = 'New chat'",
                             (title_from(text), conversation_id))
            conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))
        return self.message(int(new_id))

    def edit_user_message(self, message_id: int, text: str) -> Message:
        """Edit and resend: a new user message replaces this one and every later turn, which are kept as an
        earlier version (see earlier_versions). Returns the new message; the caller then starts the answer."""
        now = self._clock()
        with self._tx() as conn:
            old = _active(conn, message_id, "user", "edit")
            cur = conn.execute(
                "INSERT INTO messages (conversation_id, role, content, mode, created_at, updated_at)"
                " VALUES (?, 'user', ?, ?, ?, ?)", (old["conversation_id"], text, old["mode"], now, now))
            new_id = int(cur.lastrowid or 0)
            _supersede_from(conn, old["conversation_id"], message_id, new_id)
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
        with self._tx() as conn:
            if replaces is not None:
                old = _active(conn, replaces, "assistant", "regenerate")
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
                _supersede_from(conn, conversation_id, replaces, new_id)
        return self.message(new_id)

    def save_partial(self, message_id: int, thinking: str, answer: str) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE messages SET thinking = ?, content = ?, updated_at = ? WHERE id = ?",
                         (thinking, answer, self._clock(), message_id))

    def finish_answer(self, message_id: int, status: str, thinking: str, answer: str, thinking_closed: bool,
                      stats: Stats = Stats(), error: str = "", *, thinking_cut_at: int | None = None) -> None:
        if status not in STATUSES or status == "streaming":
            raise ValueError(f"bad final status {status!r}")
        now = self._clock()
        with self._tx() as conn:
            conn.execute(
                "UPDATE messages SET status = ?, thinking = ?, content = ?, thinking_closed = ?, error = ?,"
                " prompt_tokens = ?, completion_tokens = ?, prompt_seconds = ?, generation_seconds = ?,"
                " tokens_per_second = ?, thinking_cut_at = ?, pid = 0, updated_at = ? WHERE id = ?",
                (status, thinking, answer, int(thinking_closed), error, stats.prompt_tokens,
                 stats.completion_tokens, stats.prompt_seconds, stats.generation_seconds,
                 stats.tokens_per_second, thinking_cut_at, now, message_id))
            conn.execute("UPDATE conversations SET updated_at = ? WHERE id = "
                         "(SELECT conversation_id FROM messages WHERE id = ?)", (now, message_id))

    # -- versions --

    def earlier_versions(self, message_id: int) -> list[list[Message]]:
        """Earlier versions of the turn beginning at this message, oldest first: each is the run of messages
        one edit/regeneration replaced. Empty if the message never replaced anything."""
        versions: list[list[Message]] = []
        with self._lock:  # a chain only ever grows at its new end, so walking it query by query is safe
            current = message_id
            while True:
                run = [_message(r) for r in self._rows(
                    "SELECT * FROM messages WHERE superseded_by = ? ORDER BY id", (current,))]
                if not run:
                    break
                versions.append(run)
                current = run[0].id  # that run's first message may itself have replaced an older run
        versions.reverse()
        return versions

    def version_count(self, message_id: int) -> int:
        """1 + the number of earlier versions (the UI's "version n of n")."""
        count, current = 1, message_id
        with self._lock:
            while True:
                first = self._rows("SELECT MIN(id) AS id FROM messages WHERE superseded_by = ?", (current,))[0]["id"]
                if first is None:
                    return count
                count, current = count + 1, first

    def versions_by_message(self, conversation_id: int) -> dict[int, int]:
        """Total versions for each active message of the conversation that has earlier ones; one query."""
        first_replaced: dict[int, int] = {}  # replacing id -> first id of the run it replaced
        superseded: set[int] = set()
        for r in self._rows("SELECT id, superseded_by FROM messages WHERE conversation_id = ?"
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

    def search(self, text: str, limit: int = 50) -> list[SearchHit]:
        query = fts_query(text)
        if not query:
            return []
        rows = self._rows(
            "SELECT m.conversation_id AS cid, m.id AS mid, c.title AS title, m.role AS role, "
            f"snippet(messages_fts, -1, '{MARK_START}', '{MARK_END}', '…', 12) AS snip "
            "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
            "JOIN conversations c ON c.id = m.conversation_id "
            # newest first: ranking every match by bm25 costs ~200 ms on 100,000 messages, this ~ms
            "WHERE messages_fts MATCH ? AND m.superseded_by IS NULL ORDER BY messages_fts.rowid DESC LIMIT ?",
            (query, limit))
        return [SearchHit(r["cid"], r["mid"], r["title"], r["role"], r["snip"]) for r in rows]

    def recover_interrupted(self) -> int:
        """Mark answers whose writing process is gone as interrupted; returns how many."""
        rows = self._rows("SELECT id, pid FROM messages WHERE status = 'streaming'")
        dead = [r["id"] for r in rows if r["pid"] != os.getpid() and not _alive(r["pid"])]
        if dead:
            with self._tx() as conn:
                conn.executemany("UPDATE messages SET status = 'interrupted', pid = 0 WHERE id = ?",
                                 [(i,) for i in dead])
        return len(dead)

    # -- personas (saved system prompts) --

    def personas(self) -> list[Persona]:
        return [Persona(r["id"], r["name"], r["prompt"])
                for r in self._rows("SELECT id, name, prompt FROM personas ORDER BY name, id")]

    def save_persona(self, name: str, prompt: str) -> Persona:
        """Add a persona, or replace the prompt of the one with this name (any letter case)."""
        name, prompt = name.strip(), prompt.strip()
        if not name:
            raise StoreError("a persona needs a name")
        if not prompt:
            raise StoreError(f"persona {name!r} needs a system prompt (it is empty)")
        now = self._clock()
        with self._tx() as conn:
            # the latest spelling of the name wins, so renaming "coder" to "Coder" works by saving it again
            conn.execute(
                "INSERT INTO personas (name, prompt, created_at, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET name = excluded.name, prompt = excluded.prompt,"
                " updated_at = excluded.updated_at", (name, prompt, now, now))
            row = conn.execute("SELECT id, name, prompt FROM personas WHERE name = ?", (name,)).fetchone()
        return Persona(*row)

    def delete_persona(self, name: str) -> bool:
        """Delete the persona with this name (any letter case); False if there was none."""
        with self._tx() as conn:
            return conn.execute("DELETE FROM personas WHERE name = ?", (name.strip(),)).rowcount > 0


def _active(conn: sqlite3.Connection, message_id: int, role: str, action: str) -> dict[str, Any]:
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


def _supersede_from(conn: sqlite3.Connection, conversation_id: int, first_id: int, new_id: int) -> None:
    """Mark the active messages from first_id on (all but new_id) as replaced by new_id."""
    conn.execute("UPDATE messages SET superseded_by = ? WHERE conversation_id = ? AND id >= ? AND id != ?"
                 " AND superseded_by IS NULL", (new_id, conversation_id, first_id, new_id))


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit on its own); triggers keep their body."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return [s for s in statements if s.strip(" ;\n")]


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


def _explain(path: Path, exc: sqlite3.DatabaseError) -> str:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return (f"the conversations database {path} is locked by another program; nothing was lost. "
                "Try again in a moment, or close the program holding it.")
    if "not a database" in text or "malformed" in text:
        return (f"{path} is not a readable qwen-chat database ({text}). Move it aside to start fresh; "
                "qwen-chat will not overwrite it.")
    if "readonly" in text or "unable to open" in text:
        return f"cannot write {path} ({text}): check the folder's permissions and free disk space."
    if "full" in text:
        return f"the disk holding {path} is full; free some space. Nothing already saved was lost."
    return f"database error on {path}: {text}"
