"""The SQLite store: schema versions, crash safety, two writers, and clear errors."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qwen_chat.store.database import Store
from qwen_chat.store.records import Stats, StoreError
from qwen_chat.store.schema import SCHEMA_VERSION


def test_fresh_database_is_migrated_and_wal(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    assert store.schema_version() == SCHEMA_VERSION
    assert store.connection.db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    assert Store(tmp_path / "c.db").schema_version() == SCHEMA_VERSION  # reopening migrates nothing twice


def test_conversation_lifecycle(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    conv = store.create_conversation(model="m.gguf")
    store.add_user_message(conv.id, "How do I   sort a list in Python quickly and in place?", "think")
    assert store.conversation(conv.id).title == "How do I sort a list in Python quickly and in…"
    answer = store.start_answer(conv.id, "m.gguf", "think", {"temperature": 0.6})
    assert answer.status == "streaming"
    store.save_partial(answer.id, "hmm", "Use list.sort()")
    store.finish_answer(answer.id, "complete", "hmm", "Use `list.sort()`.", True, Stats(10, 5, 0.1, 0.2, 20.0))
    messages = store.messages(conv.id)
    assert [(m.role, m.status) for m in messages] == [("user", "complete"), ("assistant", "complete")]
    assert messages[1].thinking == "hmm" and messages[1].sampling == {"temperature": 0.6}
    assert messages[1].tokens_per_second == 20.0
    store.add_user_message(conv.id, "And in reverse?", "think")  # only the first question names it
    assert store.conversation(conv.id).title == "How do I sort a list in Python quickly and in…"
    store.rename(conv.id, "Sorting")
    store.add_user_message(conv.id, "Thanks", "think")
    assert store.conversation(conv.id).title == "Sorting"
    with pytest.raises(StoreError, match="needs a name"):
        store.rename(conv.id, "  ")
    second = store.create_conversation()
    assert store.latest_conversation() == store.conversation(second.id)
    store.delete(conv.id)
    assert [c.id for c in store.conversations()] == [second.id]
    assert store.messages(conv.id) == []


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from qwen_chat.store.database import Store
    store = Store(Path(sys.argv[1]))
    conv = store.create_conversation()
    store.add_user_message(conv.id, "question")
    answer = store.start_answer(conv.id, "m", "think", {})
    store.save_partial(answer.id, "some thought", "half an ans")
    print("saved", flush=True)
    time.sleep(60)
""")


def test_kill_9_mid_answer_leaves_partial_marked_interrupted(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "saved"
    store_while_running = Store(db)
    assert store_while_running.recovered == 0  # the writer is alive: its answer is not touched
    store_while_running.close()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = Store(db)
    assert store.recovered == 1
    (conv,) = store.conversations()
    user, answer = store.messages(conv.id)
    assert (user.content, answer.status, answer.thinking, answer.content) == (
        "question", "interrupted", "some thought", "half an ans")


def _write_many(db: str, tag: str, count: int) -> None:
    store = Store(Path(db), busy_timeout=30)
    conv = store.create_conversation(title=tag)
    for i in range(count):
        store.add_user_message(conv.id, f"{tag}-{i}")
        answer = store.start_answer(conv.id, "m", "", {})
        store.finish_answer(answer.id, "complete", "", f"{tag}-answer-{i}", False)


def test_two_instances_write_at_once_without_loss(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    Store(Path(db)).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(db, tag, 60)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = Store(Path(db))
    assert store.connection.db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for conv in store.conversations():
        texts = [m.content for m in store.messages(conv.id)]
        assert texts == [x for i in range(60) for x in (f"{conv.title}-{i}", f"{conv.title}-answer-{i}")]


def test_locked_database_gives_a_clear_error_and_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    store = Store(db, busy_timeout=0.2)
    conv = store.create_conversation()
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StoreError, match="locked by another program; nothing was lost"):
        store.add_user_message(conv.id, "hello")
    blocker.execute("ROLLBACK")
    store.add_user_message(conv.id, "hello")  # the retry works once the lock is gone
    assert [m.content for m in store.messages(conv.id)] == ["hello"]


def test_not_a_database(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="damaged or not a qwen-chat database.*run `qwen-chat salvage --db "):
        Store(db)
    assert db.read_bytes() == b"this is not sqlite" * 100  # never overwritten


def test_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    Store(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer qwen-chat"):
        Store(db)
