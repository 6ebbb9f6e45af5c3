"""First starts racing on a brand-new database: several processes open the same new file at once (as two windows
started together, or two `qwen-chat ask` in a script, do). Each must open it; the file must end up with the
schema exactly once. The schema version was read before the write lock was taken, so the slower start ran the
steps the first had just committed and exited with "table conversations already exists"."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from qwen_chat.store.database import Store
from qwen_chat.store.schema import SCHEMA_VERSION

PROCESSES = 8
ROUNDS = 3


def first_start(path: str, barrier: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue) -> None:
    """One start: wait for the others, then open the store, as the app does, and write to it."""
    try:
        barrier.wait(timeout=60)
        store = Store(Path(path))
        store.create_conversation(title="mine")
        store.close()
        results.put("ok")
    except BaseException as exc:  # noqa: BLE001 - whatever it was goes back to the test, which shows it
        results.put(f"{type(exc).__name__}: {exc}")


def schema(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"))
    finally:
        conn.close()


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_first_starts_at_once_all_open_the_new_database(tmp_path: Path, round_: int) -> None:
    reference = tmp_path / "alone.db"
    Store(reference).close()
    db = tmp_path / "new" / "conversations.db"  # not even its folder exists yet
    # spawn, not fork: a fork copies whatever threads earlier tests left running, and the locks they held.
    # The barrier lets every process import first and then open the file together.
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(PROCESSES), context.Queue()
    processes = [context.Process(target=first_start, args=(str(db), barrier, results)) for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert outcomes == ["ok"] * PROCESSES, [o for o in outcomes if o != "ok"]
    assert schema(db) == schema(reference)  # every table, index and trigger, once
    store = Store(db)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        assert [c.title for c in store.conversations()] == ["mine"] * PROCESSES
    finally:
        store.close()
