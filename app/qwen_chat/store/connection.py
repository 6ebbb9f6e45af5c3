"""The SQLite file under the store: one connection guarded by a lock, opened in WAL mode and migrated to the
current schema, with the transactions and queries every part of the store goes through. The `Store` holds one
(`store.connection`); so can any store module that reads rows the `Store` does not hand out.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from qwen_chat.store.records import StoreError
from qwen_chat.store.schema import MIGRATIONS, SCHEMA_VERSION, statements


class Connection:
    """Thread-safe: every query and transaction holds `lock` (an RLock: a caller may hold it across several
    queries that must see one state, as the versions walk does)."""

    def __init__(self, path: Path, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.lock = threading.RLock()
        conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=busy_timeout, check_same_thread=False,
                                   isolation_level=None)
            self.db = sqlite_utils.Database(conn)
            conn.execute("PRAGMA foreign_keys = ON")
            self._enable_wal(busy_timeout)
            self._migrate()
        except BaseException as exc:
            if conn is not None:  # closed now, not by the garbage collector: no -wal left beside a damaged file
                conn.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise StoreError(explain(self.path, exc)) from exc
            raise

    def _enable_wal(self, busy_timeout: float) -> None:
        """WAL mode, tried again until `busy_timeout` has passed. The switch needs the new file to itself for a
        moment and SQLite answers "database is locked" at once rather than wait (its busy handler is not used
        there), so a second first start reading the file just then failed; once any start has switched the
        file, the others find it in WAL mode and have nothing to do."""
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                self.db.enable_wal()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE): committed when the block ends, rolled back if it raises; a
        database error comes out as a StoreError that says what to do."""
        with self.lock:
            conn = self.db.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StoreError(explain(self.path, exc)) from exc
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self.lock:
            try:
                return list(self.db.query(sql, params))
            except sqlite3.DatabaseError as exc:
                raise StoreError(explain(self.path, exc)) from exc

    def _migrate(self) -> None:
        """Bring the file to the current schema, every missing step in one transaction. The version is read again
        once BEGIN IMMEDIATE holds the write lock: two first starts on a new file both read version 0 before
        either has it, and the second, running the steps the first has just committed, failed with "table
        conversations already exists". Under the lock it sees the first one's version and has nothing to do."""
        with self.lock:
            if self._current_version() == SCHEMA_VERSION:  # the usual start: no write lock taken
                return
            with self.tx() as conn:
                version = self._current_version()
                for step in range(version, SCHEMA_VERSION):
                    # executescript would commit on its own; run the statements inside our transaction
                    for statement in statements(MIGRATIONS[step]):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {step + 1}")

    def _current_version(self) -> int:
        version = int(self.db.conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer qwen-chat (schema {version}, this one knows "
                f"{SCHEMA_VERSION}). Upgrade qwen-chat; your conversations are untouched.")
        return version

    def schema_version(self) -> int:
        with self.lock:
            return int(self.db.conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        with self.lock:
            self.db.conn.close()


def explain(path: Path, exc: sqlite3.DatabaseError) -> str:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return (f"the conversations database {path} is locked by another program; nothing was lost. "
                "Try again in a moment, or close the program holding it.")
    if "not a database" in text or "malformed" in text:
        return (f"{path} is damaged or not a qwen-chat database ({text}). To rescue what it still holds, run "
                f"`qwen-chat salvage --db {path}`: it copies every readable conversation into a new file beside "
                "it and leaves this one as it is. qwen-chat will not overwrite it.")
    if "readonly" in text or "unable to open" in text:
        return f"cannot write {path} ({text}): check the folder's permissions and free disk space."
    if "full" in text:
        return f"the disk holding {path} is full; free some space. Nothing already saved was lost."
    return f"database error on {path}: {text}"
