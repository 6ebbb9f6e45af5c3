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


def varint(data: bytes, at: int) -> tuple[int, int]:
    """SQLite's variable-length integer at `at`: (value, where the next field starts)."""
    value = 0
    for i in range(8):
        byte = data[at + i]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, at + i + 1
    return (value << 8) | data[at + 8], at + 9


def rows_by_leaf(path: Path, table: str) -> dict[int, set[int]]:
    """The leaf pages of `table`'s b-tree and the row ids stored on each, read from the file itself (the file
    format's b-tree pages: 0x05 interior, 0x0D leaf), so a test knows exactly which rows a damaged page held."""
    conn = sqlite3.connect(path)
    try:
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    finally:
        conn.close()
    data = path.read_bytes()
    page_size = int.from_bytes(data[16:18], "big")
    leaves: dict[int, set[int]] = {}
    pending = [root]
    while pending:
        page = pending.pop()
        start = (page - 1) * page_size
        header = start + (100 if page == 1 else 0)
        kind, cells = data[header], int.from_bytes(data[header + 3:header + 5], "big")
        assert kind in (0x05, 0x0D), f"page {page} is not a table b-tree page"
        pointers = header + (12 if kind == 0x05 else 8)
        offsets = [start + int.from_bytes(data[pointers + 2 * i:pointers + 2 * i + 2], "big") for i in range(cells)]
        if kind == 0x05:  # interior: a child page number per cell, and the right-most child in the header
            pending += [int.from_bytes(data[o:o + 4], "big") for o in offsets]
            pending.append(int.from_bytes(data[header + 8:header + 12], "big"))
        else:  # leaf: each cell is the payload's length, then the row id
            leaves[page] = {varint(data, varint(data, o)[1])[0] for o in offsets}
    return leaves


def test_every_row_beside_a_damaged_page_is_recovered(tmp_path: Path) -> None:
    """Each leaf page of the messages table damaged in turn: every row on the other pages comes back, exact.
    A row read whole was once dropped when it was the last before a damaged page: reading it alone as
    `rowid BETWEEN id AND id` steps on to the next row, on the damaged page, and that step failed the read."""
    pristine = filled_db(tmp_path / "pristine.db")
    leaves = rows_by_leaf(pristine, "messages")
    assert len(leaves) >= 10 and sorted(set().union(*leaves.values())) == list(range(1, N_MESSAGES + 1))
    originals = {i + 1: body(i) for i in range(N_MESSAGES)}
    for page, lost in sorted(leaves.items()):
        db = tmp_path / f"damaged-{page}" / "c.db"
        db.parent.mkdir()
        data = bytearray(pristine.read_bytes())
        page_size = int.from_bytes(data[16:18], "big")
        data[(page - 1) * page_size:page * page_size] = bytes([0xA5]) * page_size
        db.write_bytes(bytes(data))
        result = salvage(db)
        assert result.method == "rows"
        recovered = readable_messages(result.copy)
        assert set(recovered) == set(originals) - lost, f"page {page} held {sorted(lost)}"
        assert all(originals[k] == v for k, v in recovered.items())
        assert result.unreadable == len(lost)  # nothing else was lost: every id not on it was read
