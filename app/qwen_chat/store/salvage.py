"""`qwen-chat salvage`: copy what SQLite can still read from a damaged conversations database into a new file
beside it. The original is only ever opened read-only, so it stays exactly as it was.

First `VACUUM INTO` (SQLite's own copy: it reads every row and writes a fresh file), kept only when the copy
passes `PRAGMA integrity_check`. When it fails (a damaged page stops it), the rows are copied table by table
into a file with the current schema: rows are read in ranges of ids, and where a damaged page stops a range,
each id after the last row read is looked up on its own, so only the rows on damaged pages are skipped.
Messages whose conversation row was lost get a stand-in conversation, so nothing readable ends up out of reach.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwen_chat.store.database import Store
from qwen_chat.store.records import StoreError

# parents first: the ids rows point at exist first
TABLES = ("conversations", "messages", "personas", "attachments", "tool_calls")
RANGE = 256  # row ids read at once while nothing fails


@dataclass(frozen=True)
class Salvaged:
    source: Path
    copy: Path
    method: str  # "vacuum": SQLite copied every page; "rows": row by row, damaged pages skipped
    conversations: int
    messages: int
    unreadable: int = 0  # row ids that could not be read (on damaged pages); some may never have existed
    stand_ins: int = 0  # conversations re-created for messages whose own conversation row was lost


def salvage(source: Path) -> Salvaged:
    source = Path(source).expanduser()
    if not source.is_file():
        raise StoreError(f"there is no database at {source}; give the damaged one with --db PATH")
    copy = _free_name(source)
    try:
        original = _open_read_only(source)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open {source} even read-only ({exc}); nothing can be salvaged from it") from None
    try:
        if _vacuum_into(original, copy):
            method, unreadable, stand_ins = "vacuum", 0, 0
        else:
            method = "rows"
            unreadable, stand_ins = _copy_rows(original, copy)
    finally:
        original.close()
    conversations, messages = _counts(copy)
    if not conversations and not messages and method == "rows":
        _remove(copy)
        raise StoreError(f"nothing could be read from {source}: it is damaged beyond what SQLite can read, or it "
                         "is not a qwen-chat database. It was left as it was.")
    return Salvaged(source, copy, method, conversations, messages, unreadable, stand_ins)


def _open_read_only(source: Path) -> sqlite3.Connection:
    """Read-only. Without a -wal file everything is in the main file: `immutable` then reads it without creating
    the -wal and -shm files a WAL database otherwise gets (a read-only connection cannot remove them again).
    With one (a crash, or another qwen-chat running), its committed pages count too, so it is read as well."""
    uri = source.resolve().as_uri()
    wal = Path(f"{source}-wal")
    return sqlite3.connect(f"{uri}?mode=ro" if wal.exists() else f"{uri}?mode=ro&immutable=1", uri=True)


def _free_name(source: Path) -> Path:
    """`NAME.salvaged.db` beside the original, or `NAME.salvaged-2.db` ...: never over an earlier salvage."""
    suffix = source.suffix or ".db"
    for n in range(1, 1000):
        candidate = source.with_name(f"{source.stem}.salvaged{'' if n == 1 else f'-{n}'}{suffix}")
        if not any(Path(f"{candidate}{end}").exists() for end in ("", "-wal", "-shm", "-journal")):
            return candidate
    raise StoreError(f"{source.parent} already holds 999 salvaged copies of {source.name}; move some away")


def _remove(path: Path) -> None:
    for end in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{end}").unlink(missing_ok=True)


def _vacuum_into(original: sqlite3.Connection, copy: Path) -> bool:
    try:
        original.execute("VACUUM INTO ?", (str(copy),))
        check = sqlite3.connect(copy)
        try:
            ok = check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            if ok and _has_fts(check):  # the search index is a table of its own: rebuilt if it is damaged
                _check_fts(check)
        finally:
            check.close()
    except sqlite3.DatabaseError:
        ok = False
    if not ok:
        _remove(copy)
    return ok


def _has_fts(conn: sqlite3.Connection) -> bool:
    return bool(conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'messages_fts'").fetchone())


def _check_fts(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')")
    except sqlite3.DatabaseError:
        conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")
        conn.commit()


def _copy_rows(original: sqlite3.Connection, copy: Path) -> tuple[int, int]:
    """Every readable row into a new file with the current schema; returns (unreadable ids, stand-ins)."""
    Store(copy).close()  # creates the current schema (and its search triggers, which index every copied row)
    out = sqlite3.connect(copy, isolation_level=None)
    try:
        out.execute("PRAGMA foreign_keys = OFF")  # stand-ins for lost parents are added after the rows
        out.execute("BEGIN")
        unreadable = sum(_copy_table(original, out, table) for table in TABLES)
        stand_ins = _stand_ins(out)
        out.execute("COMMIT")
    finally:
        out.close()
    return unreadable, stand_ins


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    try:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
    except sqlite3.DatabaseError:
        return []  # its schema is on a damaged page: nothing of it can be found


def _last_id(original: sqlite3.Connection, table: str) -> int:
    """The highest row id: from the table, or from sqlite_sequence when the table's last page is damaged."""
    last = 0
    for sql, params in ((f"SELECT max(rowid) FROM {table}", ()),
                        ("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,))):
        try:
            row = original.execute(sql, params).fetchone()
        except sqlite3.DatabaseError:
            continue
        last = max(last, int(row[0] or 0) if row else 0)
    return last


def _copy_table(original: sqlite3.Connection, out: sqlite3.Connection, table: str) -> int:
    """Copy `table`'s readable rows (the columns both files have); returns how many ids could not be read."""
    wanted = set(_columns(out, table))
    columns = [c for c in _columns(original, table) if c in wanted]
    if "id" not in columns:
        return 0
    names = ", ".join(columns)
    insert = f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"
    unreadable = 0
    last = _last_id(original, table)
    for low in range(1, last + 1, RANGE):
        rows, lost = _read_range(original, f"SELECT rowid, {names} FROM {table}", low, min(low + RANGE - 1, last))
        unreadable += lost
        out.executemany(insert, [row[1:] for row in rows])
    return unreadable


def _read_range(original: sqlite3.Connection, select: str, low: int, high: int) -> tuple[list[Any], int]:
    """The rows with ids `low` to `high` (each led by its rowid), and how many ids in it could not be read.

    When a damaged page stops the range, the rows read before it are kept and every later id is looked up
    alone with `rowid = ?`: a point lookup reads only the pages on the way down to that row. `BETWEEN id AND
    id` would not do: it steps on to the next row to see that the range has ended, and for the last row before
    a damaged page that step reads the damaged page and fails, losing a row that had been read whole."""
    rows: list[Any] = []
    try:
        for row in original.execute(f"{select} WHERE rowid BETWEEN ? AND ? ORDER BY rowid", (low, high)):
            rows.append(row)
        return rows, 0
    except sqlite3.DatabaseError:
        pass
    unreadable = 0
    for rowid in range(rows[-1][0] + 1 if rows else low, high + 1):
        try:
            rows += original.execute(f"{select} WHERE rowid = ?", (rowid,)).fetchall()
        except sqlite3.DatabaseError:  # it lived on a damaged page (or, deleted, would have)
            unreadable += 1
    return rows, unreadable


def _stand_ins(out: sqlite3.Connection) -> int:
    """A conversation for every set of messages whose own conversation row was lost."""
    cursor = out.execute(
        "INSERT INTO conversations (id, title, created_at, updated_at) "
        "SELECT conversation_id, 'Recovered conversation ' || conversation_id, min(created_at), max(updated_at) "
        "FROM messages WHERE conversation_id NOT IN (SELECT id FROM conversations) GROUP BY conversation_id")
    return max(cursor.rowcount, 0)


def _counts(copy: Path) -> tuple[int, int]:
    conn = sqlite3.connect(copy)
    try:
        conversations = conn.execute("SELECT count(*) FROM conversations").fetchone()[0]
        messages = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    finally:
        conn.close()
    return int(conversations), int(messages)
