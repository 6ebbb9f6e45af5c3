"""Schema 3: message versions (edit and resend, regenerate), thinking budget/context fields, personas."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from qwen_chat.store.database import Store
from qwen_chat.store.export import from_json, to_json
from qwen_chat.store.records import Message, Stats, StoreError
from qwen_chat.store.schema import MIGRATIONS as _MIGRATIONS
from qwen_chat.store.schema import SCHEMA_VERSION
from qwen_chat.store.schema import statements as _statements


def answer(store: Store, conversation_id: int, text: str, **kwargs: object) -> Message:
    started = store.start_answer(conversation_id, "m.gguf", "think", {}, **kwargs)  # type: ignore[arg-type]
    store.finish_answer(started.id, "complete", "", text, True)
    return store.message(started.id)


def chat(store: Store, *turns: str) -> tuple[int, list[Message]]:
    """A conversation with one question and answer per text ('q1' -> 'q1' / 'a1')."""
    conv = store.create_conversation()
    made = []
    for q in turns:
        made.append(store.add_user_message(conv.id, q, "think"))
        made.append(answer(store, conv.id, q.replace("q", "a")))
    return conv.id, made


def texts(messages: list[Message]) -> list[str]:
    return [m.content for m in messages]


def test_edit_in_the_middle_replaces_later_turns_and_keeps_them(tmp_path: Path) -> None:
    times = iter(range(100, 200))
    store = Store(tmp_path / "c.db", clock=lambda: float(next(times)))
    conv_id, (q1, a1, q2, a2, q3, a3) = chat(store, "q1", "q2", "q3")
    before = store.conversation(conv_id).updated_at
    edited = store.edit_user_message(q2.id, "q2 better")
    assert (edited.role, edited.content, edited.mode, edited.conversation_id) == ("user", "q2 better", "think", conv_id)
    assert edited.id > a3.id and edited.superseded_by is None
    assert texts(store.messages(conv_id)) == ["q1", "a1", "q2 better"]  # the caller now starts the answer
    assert store.conversation(conv_id).updated_at > before
    assert [texts(v) for v in store.earlier_versions(edited.id)] == [["q2", "a2", "q3", "a3"]]
    assert all(m.superseded_by == edited.id for m in store.earlier_versions(edited.id)[0])
    assert store.earlier_versions(q1.id) == [] and store.version_count(q1.id) == 1
    assert store.version_count(edited.id) == 2 and store.versions_by_message(conv_id) == {edited.id: 2}
    new_answer = answer(store, conv_id, "a2 better")
    assert texts(store.messages(conv_id)) == ["q1", "a1", "q2 better", "a2 better"]
    assert store.message(new_answer.id).superseded_by is None


def test_editing_twice_gives_three_versions_oldest_first(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    conv_id, (q1, a1) = chat(store, "q1")
    second = store.edit_user_message(q1.id, "q1 v2")
    answer(store, conv_id, "a1 v2")
    third = store.edit_user_message(second.id, "q1 v3")
    answer(store, conv_id, "a1 v3")
    assert texts(store.messages(conv_id)) == ["q1 v3", "a1 v3"]
    assert [texts(v) for v in store.earlier_versions(third.id)] == [["q1", "a1"], ["q1 v2", "a1 v2"]]
    assert store.version_count(third.id) == 3
    assert store.versions_by_message(conv_id) == {third.id: 3}  # the inner version's own marker is not listed


def test_regenerate_keeps_the_old_answer_as_a_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    conv_id, (q1, a1, q2, a2) = chat(store, "q1", "q2")
    regenerated = store.start_answer(conv_id, "m.gguf", "think", {}, replaces=a1.id)
    # the old answer and the turn after it are replaced in the same transaction as the new row's insert
    assert [m.id for m in store.messages(conv_id)] == [q1.id, regenerated.id]
    store.finish_answer(regenerated.id, "complete", "", "a1 again", True)
    assert [texts(v) for v in store.earlier_versions(regenerated.id)] == [["a1", "q2", "a2"]]
    again = answer(store, conv_id, "a1 third", replaces=regenerated.id)
    assert [texts(v) for v in store.earlier_versions(again.id)] == [["a1", "q2", "a2"], ["a1 again"]]
    assert store.versions_by_message(conv_id) == {again.id: 3}
    with pytest.raises(StoreError, match="earlier version"):
        store.start_answer(conv_id, "m.gguf", "think", {}, replaces=a1.id)
    with pytest.raises(StoreError, match="user message, not a assistant"):
        store.start_answer(conv_id, "m.gguf", "think", {}, replaces=q1.id)
    other = store.create_conversation()
    with pytest.raises(StoreError, match="another conversation"):
        store.start_answer(other.id, "m.gguf", "think", {}, replaces=again.id)
    assert store.messages(other.id) == []  # refused before inserting anything
    assert texts(store.messages(conv_id)) == ["q1", "a1 third"]


def test_editing_a_superseded_or_assistant_message_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    conv_id, (q1, a1, q2, a2) = chat(store, "q1", "q2")
    with pytest.raises(StoreError, match="assistant message, not a user"):
        store.edit_user_message(a1.id, "x")
    store.edit_user_message(q2.id, "q2 new")
    with pytest.raises(StoreError, match="earlier version"):
        store.edit_user_message(q2.id, "q2 newer")
    with pytest.raises(StoreError, match="no longer exists"):
        store.edit_user_message(9999, "x")
    assert texts(store.messages(conv_id)) == ["q1", "a1", "q2 new"]  # the refusals changed nothing


def test_search_skips_superseded_messages(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    conv_id, (q1, a1) = chat(store, "lighthouse keepers")
    edited = store.edit_user_message(q1.id, "windmill millers")
    assert store.search("lighthouse") == []
    assert [h.message_id for h in store.search("windmill")] == [edited.id]
    assert store.earlier_versions(edited.id)[0][0].content == "lighthouse keepers"  # kept, just not searched


def test_personas_crud(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    assert store.personas() == []
    coder = store.save_persona("  Coder ", "You write Python.\n")
    assert (coder.name, coder.prompt) == ("Coder", "You write Python.")
    store.save_persona("brief", "Answer in one line.")
    replaced = store.save_persona("CODER", "You write Rust.")
    assert replaced.id == coder.id and replaced.prompt == "You write Rust."
    assert [(p.name, p.prompt) for p in store.personas()] == [("brief", "Answer in one line."),
                                                               ("CODER", "You write Rust.")]
    with pytest.raises(StoreError, match="needs a name"):
        store.save_persona("   ", "x")
    with pytest.raises(StoreError, match="needs a system prompt"):
        store.save_persona("empty", " \n")
    assert len(store.personas()) == 2
    assert store.delete_persona("coder") is True and store.delete_persona("coder") is False
    assert [p.name for p in store.personas()] == ["brief"]
    conv = store.create_conversation()
    store.set_system_prompt(conv.id, "Answer in one line.")
    assert store.conversation(conv.id).system_prompt == "Answer in one line."
    with pytest.raises(StoreError, match="no longer exists"):
        store.set_system_prompt(9999, "x")


def test_budget_cut_and_context_round_trip(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    store = Store(db)
    conv_id, (q1, a1) = chat(store, "q1")
    q2 = store.add_user_message(conv_id, "q2")
    started = store.start_answer(conv_id, "m.gguf", "think", {}, thinking_budget=512, context_from_id=q2.id)
    thinking = "lots of thought. Considering the limited time, I have to give the solution now."
    store.finish_answer(started.id, "complete", thinking, "a2", True, Stats(), thinking_cut_at=16)
    store.close()
    again = Store(db).message(started.id)
    assert (again.thinking_budget, again.thinking_cut_at, again.context_from_id) == (512, 16, q2.id)
    assert again.thinking[again.thinking_cut_at:].startswith(" Considering")
    plain = Store(db).message(a1.id)  # an answer without budget or dropped context keeps the defaults
    assert (plain.thinking_budget, plain.thinking_cut_at, plain.context_from_id, plain.superseded_by) == (
        0, None, None, None)
    with pytest.raises(ValueError, match="thinking budget"):
        Store(db).start_answer(conv_id, "m", "", {}, thinking_budget=-1)


def test_export_has_only_the_active_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    conv_id, (q1, a1) = chat(store, "q1")
    store.edit_user_message(q1.id, "q1 edited")
    answer(store, conv_id, "a1 edited")
    imported = from_json(store, to_json(store, store.conversation(conv_id)))
    assert texts(store.messages(imported.id)) == ["q1 edited", "a1 edited"]


def test_migration_from_version_2_keeps_everything_active(tmp_path: Path) -> None:
    db = tmp_path / "v2.db"
    conn = sqlite3.connect(db)
    for script in _MIGRATIONS[:2]:  # exactly what the schema-2 qwen-chat created
        for statement in _statements(script):
            conn.execute(statement)
    conn.execute("INSERT INTO conversations (title, system_prompt, created_at, updated_at) "
                 "VALUES ('Old', 'Be brief.', 1, 2)")
    conn.execute("INSERT INTO messages (conversation_id, role, content, mode, created_at, updated_at) "
                 "VALUES (1, 'user', 'an old question about lighthouses', 'think', 1, 1)")
    conn.execute("INSERT INTO messages (conversation_id, role, content, thinking, thinking_closed, model, sampling, "
                 "completion_tokens, created_at, updated_at) VALUES (1, 'assistant', 'Fresnel lenses.', "
                 "'they mean optics', 1, 'm.gguf', '{\"temperature\": 0.6}', 7, 2, 2)")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()

    store = Store(db)
    assert store.schema_version() == SCHEMA_VERSION >= 3
    assert store.connection.db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conv = store.conversation(1)
    assert (conv.title, conv.system_prompt) == ("Old", "Be brief.")
    question, reply = store.messages(1)
    assert (question.content, reply.content, reply.thinking, reply.sampling, reply.completion_tokens) == (
        "an old question about lighthouses", "Fresnel lenses.", "they mean optics", {"temperature": 0.6}, 7)
    assert all(m.superseded_by is None and m.thinking_budget == 0 and m.thinking_cut_at is None
               and m.context_from_id is None for m in (question, reply))
    assert [h.message_id for h in store.search("lighthouses")] == [question.id]
    assert [h.message_id for h in store.search("optics")] == [reply.id]  # thinking still indexed
    assert store.versions_by_message(1) == {} and store.personas() == []
    edited = store.edit_user_message(question.id, "a new question about windmills")  # old rows are editable
    assert [texts(v) for v in store.earlier_versions(edited.id)] == [
        ["an old question about lighthouses", "Fresnel lenses."]]
    store.close()
    assert Store(db).schema_version() == SCHEMA_VERSION  # reopening migrates nothing twice
