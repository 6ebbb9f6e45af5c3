"""`qwen-chat salvage`: a real SQLite file, damaged by overwriting one page, copied into a new file with every
row SQLite can still read; the original left byte for byte as it was; the errors before it point at salvage."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from qwen_chat.cli.main import main
from qwen_chat.store.database import Store
from qwen_chat.store.records import StoreError
from qwen_chat.store.salvage import salvage

N_MESSAGES = 60  # ~1.5 kB each: two or three to a 4 kB page, so one damaged page loses only a few


def body(i: int) -> str:
    # the marker is found only in the messages table: the search index lower-cases and splits it into words
    return f"<<MSG-{i:04d}>> " + f"paragraph {i} about lighthouses and tides. " * 34


def filled_db(path: Path) -> Path:
    store = Store(path)
    conversations = [store.create_conversation(title=f"<<CONV-{n}>> chat {n}") for n in range(3)]
    for i in range(N_MESSAGES):
        conversation = conversations[i % 3].id
        if i % 2 == 0:
            store.add_user_message(conversation, body(i))
        else:
            answer = store.start_answer(conversation, "tiny.gguf", "think", {})
            store.finish_answer(answer.id, "complete", "", body(i), True)
    store.save_persona("coder", "You write code.")
    store.close()
    assert not Path(f"{path}-wal").exists()  # the last connection checkpointed the WAL into the file
    return path


def damage_page_holding(path: Path, marker: bytes) -> int:
    """Overwrite the page that holds `marker` with garbage; returns its number (1-based)."""
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    page = data.index(marker) // page_size
    assert page > 0, "never page 1: it holds the schema"
    data[page * page_size:(page + 1) * page_size] = bytes([0xA5]) * page_size
    path.write_bytes(bytes(data))
    return page + 1


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def readable_messages(path: Path) -> dict[int, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT id, content FROM messages"))
    finally:
        conn.close()


def test_a_damaged_page_is_skipped_and_everything_else_recovered(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    db = filled_db(tmp_path / "conversations.db")
    damage_page_holding(db, b"<<MSG-0030>>")
    before = digest(db)
    # the store refuses it, and says what to do
    with pytest.raises(StoreError, match=f"qwen-chat salvage --db {db}"):
        Store(db).messages(1)
    assert main(["search", "lighthouses", "--db", str(db)]) == 1
    assert "qwen-chat salvage" in capsys.readouterr().err

    assert main(["salvage", "--db", str(db)]) == 0
    err = capsys.readouterr().err
    copy = tmp_path / "conversations.salvaged.db"
    assert f"the salvaged copy: {copy}" in err and f"the original, left as it was: {db}" in err
    assert digest(db) == before and not Path(f"{db}-wal").exists()
    recovered = readable_messages(copy)
    assert N_MESSAGES - 4 <= len(recovered) < N_MESSAGES  # only the rows of the damaged page are gone
    assert f"3 conversations and {len(recovered)} messages" in err and "row by row" in err
    # every recovered message is exact, and every message not on the damaged page is there
    originals = {i + 1: body(i) for i in range(N_MESSAGES)}
    assert all(originals[k] == v for k, v in recovered.items())
    assert 30 + 1 not in recovered
    # the copy is a working database: it opens, lists, searches
    store = Store(copy)
    assert len(store.conversations()) == 3 and [p.name for p in store.personas()] == ["coder"]
    assert store.search("lighthouses") and not store.search("MSG-0030")
    store.close()


def test_lost_conversation_rows_get_stand_ins(tmp_path: Path) -> None:
    db = filled_db(tmp_path / "c.db")
    damage_page_holding(db, b"<<CONV-1>>")  # the conversations table is one page: every row on it is lost
    result = salvage(db)
    assert result.method == "rows" and result.stand_ins == 3 and result.conversations == 3
    assert result.messages == N_MESSAGES
    store = Store(result.copy)
    assert sorted(c.title for c in store.conversations()) == [f"Recovered conversation {n}" for n in (1, 2, 3)]
    assert len(store.messages(2)) == N_MESSAGES // 3
    store.close()


def test_an_undamaged_database_is_copied_whole_by_vacuum(tmp_path: Path) -> None:
    db = filled_db(tmp_path / "c.db")
    before = digest(db)
    first, second = salvage(db), salvage(db)
    assert first.method == "vacuum" and (first.conversations, first.messages) == (3, N_MESSAGES)
    assert second.copy == tmp_path / "c.salvaged-2.db"  # never over an earlier salvage
    assert digest(db) == before
    assert readable_messages(first.copy) == {i + 1: body(i) for i in range(N_MESSAGES)}


def test_salvage_explains_a_missing_or_hopeless_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["salvage", "--db", str(tmp_path / "none.db")]) == 1
    assert "there is no database at" in capsys.readouterr().err
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this was never a database" * 200)
    assert main(["salvage", "--db", str(junk)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "qwen-chat: nothing could be read from" in err
    assert not list(tmp_path.glob("*.salvaged*"))  # no empty copy left behind
    assert junk.read_bytes() == b"this was never a database" * 200
