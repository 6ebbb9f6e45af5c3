"""Full-text search (FTS5, migration 2), export to Markdown/JSON and import back."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from qwen_chat.cli.main import main
from qwen_chat.store.database import MARK_END, MARK_START, Store
from qwen_chat.store.export import from_json, to_json, to_markdown
from qwen_chat.store.records import StoreError
from qwen_chat.store.schema import MIGRATIONS as _MIGRATIONS
from qwen_chat.store.schema import statements as _statements


def filled(store: Store) -> int:
    conv = store.create_conversation(system_prompt="Be brief.")
    store.add_user_message(conv.id, "How do I sort a dict by value in Python?")
    answer = store.start_answer(conv.id, "Qwen3-8B-Q4_K_M.gguf", "think", {"temperature": 0.6})
    store.save_partial(answer.id, "half", "half")
    store.finish_answer(answer.id, "complete", "They want sorted() with a key.",
                        "Use `sorted(d.items(), key=lambda kv: kv[1])`. ```not a fence``` [bold]x[/]", True)
    other = store.create_conversation(title="Cooking")
    store.add_user_message(other.id, "A recipe for crêpes")
    return conv.id


def test_search_finds_words_in_answers_questions_and_thinking(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    conv_id = filled(store)
    hits = store.search("sorted")
    assert {h.role for h in hits} == {"assistant"} and hits[0].conversation_id == conv_id
    assert f"{MARK_START}sorted{MARK_END}" in hits[0].snippet
    assert [h.title for h in store.search("crepes")] == ["Cooking"]  # diacritics folded
    assert store.search("sor")  # prefix on the last word while typing
    assert store.search("key") and store.search("They want")  # thinking is searchable
    assert store.search('AND OR "NEAR(') == []  # user text is never FTS syntax
    assert store.search("half") == []  # partial saves leave no stale index entries
    store.delete(conv_id)
    assert store.search("sorted") == []


def test_migration_from_version_1_indexes_existing_messages(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    for statement in _statements(_MIGRATIONS[0]):
        conn.execute(statement)
    conn.execute("INSERT INTO conversations (title, created_at, updated_at) VALUES ('Old', 0, 0)")
    conn.execute("INSERT INTO messages (conversation_id, role, content, created_at, updated_at) "
                 "VALUES (1, 'user', 'an old question about lighthouses', 0, 0)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = Store(db)
    assert store.schema_version() == len(_MIGRATIONS)
    assert [h.title for h in store.search("lighthouses")] == ["Old"]


def test_export_markdown_and_json_then_import(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    conv = store.conversation(filled(store))
    md = to_markdown(store, conv, thinking=True)
    assert md.startswith("# How do I sort a dict by value in Python?") and "**System:**" in md
    assert "<details><summary>Thinking</summary>" in md and "They want sorted() with a key." in md
    assert "Thinking" not in to_markdown(store, conv, thinking=False)
    data = json.loads(to_json(store, conv, thinking=True))
    assert data["format"] == "qwen-chat-conversation" and data["messages"][1]["thinking"]
    assert "thinking" not in json.loads(to_json(store, conv, thinking=False))["messages"][1]
    again = from_json(store, to_json(store, conv, thinking=True))
    assert again.id != conv.id and again.title == conv.title and again.system_prompt == "Be brief."
    old, new = store.messages(conv.id), store.messages(again.id)
    assert [(m.role, m.content, m.thinking, m.status) for m in old] == [(m.role, m.content, m.thinking, m.status)
                                                                        for m in new]
    for bad, why in (("{", "not JSON"), ('{"format": "other"}', "not a qwen-chat conversation export"),
                     ('{"format": "qwen-chat-conversation", "version": 9}', "version 9"),
                     ('{"format": "qwen-chat-conversation", "version": 1, "messages": [{"role": "x"}]}', "role")):
        with pytest.raises(StoreError, match=why):
            from_json(store, bad)


def test_cli_search_export_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "c.db"
    filled(Store(db))
    assert main(["--db", str(db), "search", "sorted"]) == 0
    assert "[sorted]" in capsys.readouterr().out  # not a terminal: the match in brackets
    assert main(["--db", str(db), "search", "zebra"]) == 1
    out = tmp_path / "chat.json"
    assert main(["--db", str(db), "export", "1", "--format", "json", "--thinking", "-o", str(out)]) == 0
    assert main(["--db", str(db), "import", str(out)]) == 0
    assert "imported as conversation" in capsys.readouterr().err
    assert len(Store(db).conversations()) == 3
    assert main(["--db", str(db), "export"]) == 0
    assert capsys.readouterr().out.startswith("# ")


def export_with(**fields) -> str:
    data = {"format": "qwen-chat-conversation", "version": 1, "title": "t",
            "messages": [{"role": "user", "content": "hi"}], **fields}
    return json.dumps(data)


def test_import_refuses_absurd_input_with_the_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from qwen_chat.store.export import MAX_FILE_BYTES, MAX_TEXT_CHARS

    store = Store(tmp_path / "c.db")
    deep = export_with()[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    cases = [(deep, "nested more than 16 levels"),  # json alone would raise RecursionError
             (export_with(x=[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]), "nested more than 16 levels"),
             (export_with(messages=[{"role": "user", "content": "x" * (MAX_TEXT_CHARS + 1)}]),
              "message 1 is 1,048,577 characters; at most 1,048,576"),
             (export_with(messages=[{"role": "assistant", "content": "a", "thinking": "x" * (MAX_TEXT_CHARS + 1)}]),
              "message 1's thinking is 1,048,577 characters"),
             (export_with(title="t" * 1001), "the title is 1,001 characters; at most 1,000"),
             ('{"n": ' + "9" * 5000 + "}", "not JSON")]
    cases += _bad_numbers()
    for text, why in cases:
        with pytest.raises(StoreError, match=why):
            from_json(store, text)
    assert store.conversations() == []  # nothing half-imported
    big = tmp_path / "big.json"
    with big.open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: refused by its size, never read
    assert main(["--db", str(tmp_path / "c.db"), "import", str(big)]) == 1
    assert "an export qwen-chat imports is at most 32 MiB" in capsys.readouterr().err
    nested = tmp_path / "nested.json"
    nested.write_text(deep)
    assert main(["--db", str(tmp_path / "c.db"), "import", str(nested)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "nested more than 16 levels" in err
    _refused_by_the_cli(tmp_path)


def attached(tokens: str) -> str:
    """An export whose file's token count is `tokens`, written as raw JSON (1e400 and NaN are JSON to Python)."""
    return export_with(messages=[{"role": "user", "content": "hi", "attachments": [
        {"name": "a.txt", "content": "some text", "tokens": "TOKENS"}]}]).replace('"TOKENS"', tokens)


def answer_with(**fields) -> str:
    return export_with(messages=[{"role": "assistant", "content": "a", **fields}])


def raw_in(text: str, value: str) -> str:
    """`text` with its "RAW" replaced by `value` as raw JSON: NaN, Infinity and 1e400 are JSON to Python."""
    return text.replace('"RAW"', value)


def _bad_numbers() -> list[tuple[str, str]]:
    """Every number an export holds, wrong: a text, a flag, NaN, an infinity, a fraction, out of range. Each is
    refused naming its field; "many" and NaN token counts were once imported as they were."""
    tokens = "message 1's completion_tokens must be a whole number from 0 to 8,388,608, not "
    rate = "message 1's tokens_per_second must be a number from 0 to 1,000,000,000, not "
    when = "message 1's created_at must be a date and time like 2025-01-31T12:00:00+00:00, not "
    cases = [(raw_in(answer_with(completion_tokens="RAW"), bad), tokens + shown) for bad, shown in (
        ('"many"', '"many"'), ("NaN", "NaN"), ("1e400", "Infinity"), ("-Infinity", "-Infinity"), ("true", "true"),
        ("1.5", "1.5"), ("-1", "-1"), ("8388609", "8388609"), ('"12"', '"12"'), ("[3]", "[3]"))]
    cases += [(raw_in(answer_with(tokens_per_second="RAW"), bad), rate + shown) for bad, shown in (
        ('"fast"', '"fast"'), ("NaN", "NaN"), ("Infinity", "Infinity"), ("1e400", "Infinity"), ("false", "false"),
        ("-0.5", "-0.5"), ("1e10", "10000000000.0"))]
    cases += [(raw_in(answer_with(created_at="RAW"), bad), when + shown) for bad, shown in (
        ('"yesterday"', '"yesterday"'), ("1700000000", "1700000000"), ("NaN", "NaN"), ('"2025-13-40"', '"2025-13-40"'))]
    cases += [(raw_in(export_with(created_at="RAW"), '"many"'), "the export's created_at must be a date and time"),
              (raw_in(export_with(messages=[{"role": "user", "content": "q", "created_at": "RAW"}]), "Infinity"),
               when + "Infinity"),
              (raw_in(answer_with(sampling={"temperature": "RAW"}), "NaN"),
               "message 1's sampling: \"temperature\" must be a finite number, not NaN"),
              (raw_in(answer_with(sampling={"top_k": "RAW"}), '"many"'), '"top_k" must be a finite number, not "many"'),
              (raw_in(answer_with(sampling={"seed": "RAW"}), "true"), '"seed" must be a finite number, not true'),
              (raw_in(answer_with(tool_calls=[{"name": "t", "truncated": "RAW"}]), '"yes"'),
               "message 1's tool call 't': truncated must be true or false, not \"yes\""),
              # a good first message changes nothing: the whole file is checked before anything is written
              (raw_in(export_with(messages=[{"role": "user", "content": "fine"},
                                            {"role": "assistant", "content": "a", "completion_tokens": "RAW"}]),
                      '"many"'),
               'message 2\'s completion_tokens must be a whole number from 0 to 8,388,608, not "many"')]
    return [(text, re.escape(why)) for text, why in cases]


def test_import_keeps_the_checked_numbers(tmp_path: Path) -> None:
    """What passes the checks is kept: an answer's token count and speed come back as exported."""
    store = Store(tmp_path / "c.db")
    text = export_with(created_at="2025-01-31T12:00:00Z", messages=[
        {"role": "user", "content": "q", "created_at": "2025-01-31T12:00:00+00:00"},
        {"role": "assistant", "content": "a", "completion_tokens": 42, "tokens_per_second": 12.5,
         "sampling": {"temperature": 0.6, "top_k": 20, "seed": None},
         "tool_calls": [{"name": "t", "truncated": True}]}])
    answer = store.messages(from_json(store, text).id)[-1]
    assert (answer.completion_tokens, answer.tokens_per_second) == (42, 12.5)
    again = json.loads(to_json(store, store.conversations()[0]))["messages"][-1]
    assert (again["completion_tokens"], again["tokens_per_second"]) == (42, 12.5)


def _refused_by_the_cli(tmp_path: Path) -> None:
    """Fields of the wrong type or out of range, through the real command: one line, exit 1, nothing stored.
    int() and str() once turned these into tracebacks, numbers nobody wrote, or the text "None"."""
    from qwen_chat.store.import_checks import MAX_MESSAGES, MAX_NAME_CHARS

    whole = "message 1's file 'a.txt': tokens must be a whole number from 0 to 36, not "
    cases = [(attached(t), whole + shown) for t, shown in (
                ('"abc"', '"abc"'), ("[1]", "[1]"), ("true", "true"), ("1e400", "Infinity"), ("NaN", "NaN"),
                ("-1", "-1"), ("1.5", "1.5"), ("37", "37"), ("99999999999999999999999", "99999999999999999999999"))]
    cases += [(export_with(title=["t"]), 'the title must be a text, not ["t"]'),
              (export_with(model={"a": 1}), 'the model must be a text, not {"a": 1}'),
              (export_with(model="m" * (MAX_NAME_CHARS + 1)), "the model is 1,001 characters; at most 1,000"),
              (export_with(system_prompt=7), "the system prompt must be a text, not 7"),
              (export_with(version=True), "export version true is not supported"),
              (export_with(messages={"role": "user"}), "the export's messages must be a list"),
              (export_with(messages=[{"role": "user", "content": "q"}] * (MAX_MESSAGES + 1)),
               "the export has 100,001 messages; at most 100,000"),
              (export_with(messages=[{"role": "user", "content": "q", "attachments": [{"name": 3}]}]),
               "message 1's attachment 1's name must be a text, not 3"),
              (export_with(messages=[{"role": "user", "content": "q", "attachments": "a.txt"}]),
               "message 1's attachments must be a list"),
              (answer_with(model=["m"]), "message 1's model must be a text"),
              (answer_with(thinking=False), "message 1's thinking must be a text, not false"),
              (answer_with(sampling=[0.6]), "message 1's sampling must be an object"),
              (answer_with(tool_calls=[{"name": "t", "id": 12}]), "message 1's tool call 't': id must be a text"),
              (answer_with(tool_calls=[{"name": "t", "server": ["s"]}]), "tool call 't': server must be a text"),
              (answer_with(tool_calls=[{"name": "t", "result": 1}]), "tool call 't': result must be a text"),
              (answer_with(tool_calls=[{"name": "t", "arguments": [1]}]), "tool call 't': arguments must be an obj"),
              (answer_with(tool_calls=["t"]), "message 1's tool call 1 must be an object with a name"),
              (export_with(title="\ud800"), "a lone surrogate (\\ud800)"),  # SQLite cannot store it
              (answer_with(sampling={"\udfff": 1}), "a lone surrogate (\\udfff)"),
              (raw_in(answer_with(completion_tokens="RAW"), '"many"'),
               'message 1\'s completion_tokens must be a whole number from 0 to 8,388,608, not "many"')]
    db, file = tmp_path / "cli.db", tmp_path / "bad.json"
    for text, why in cases:
        file.write_text(text, encoding="utf-8")
        result = subprocess.run([sys.executable, "-m", "qwen_chat", "--db", str(db), "import", str(file)],
                                capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stdout) == (1, ""), (text[:200], result.stderr)
        assert result.stderr.startswith(f"qwen-chat: {file}: ") and why in result.stderr, (why, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert Store(db).conversations() == []  # not one half-imported


def test_import_falls_back_where_a_field_is_left_out_or_null(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    text = export_with(title="  ", model=None, system_prompt=None, messages=[
        {"role": "user", "content": "q", "attachments": [{"name": "a.txt", "content": "abc", "tokens": None}]},
        {"role": "assistant", "content": "a", "thinking": None, "model": None, "mode": None, "sampling": None,
         "status": ["odd"], "tool_calls": [{"name": "t", "id": None, "status": "running", "result": None},
                                           {"name": "u", "status": "vanished"}]}])
    conversation = from_json(store, text)
    assert (conversation.title, conversation.model, conversation.system_prompt) == ("Imported chat", "", "")
    question, answer = store.messages(conversation.id)
    assert [(f.name, f.tokens) for f in question.attachments] == [("a.txt", 0)]
    assert (answer.thinking, answer.model, answer.mode, answer.sampling, answer.status) == ("", "", "", {}, "complete")
    assert [(c.call_id, c.status, c.result, c.arguments, c.server) for c in answer.tool_calls] == [
        ("call_0", "interrupted", "", {}, ""), ("call_1", "interrupted", "", {}, "")]



def test_an_import_the_database_refuses_halfway_is_undone(tmp_path: Path) -> None:
    """Checked first, an import can still fail in SQLite (a full disk); what it wrote by then is deleted."""
    store = Store(tmp_path / "c.db")
    with sqlite3.connect(tmp_path / "c.db") as conn:  # a real refusal from SQLite, on the last write
        conn.execute("CREATE TRIGGER full BEFORE INSERT ON tool_calls BEGIN SELECT RAISE(ABORT, 'refused here'); END")
    text = export_with(messages=[{"role": "user", "content": "q"},
                                 {"role": "assistant", "content": "a", "tool_calls": [{"name": "t"}]}])
    with pytest.raises(StoreError, match="the import failed and was undone: .*refused here"):
        from_json(store, text)
    assert store.conversations() == [] and store.search("q") == []

class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_printed_titles_snippets_and_names_are_made_printable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "c.db"
    store = Store(db)
    evil = "\x1b]0;pwned\x07\x1b[2J"
    conv = store.create_conversation(title=f"{evil}title")
    store.add_user_message(conv.id, f"an {evil} escaping message")
    assert main(["--db", str(db), "search", "escaping"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "␛]0;pwned␇␛[2Jtitle" in out and "[escaping]" in out
    export = tmp_path / "e.json"
    export.write_text(export_with(title=f"{evil}imported"))
    assert main(["--db", str(db), "import", str(export)]) == 0
    assert "\x1b" not in capsys.readouterr().err
    # an export is data: exact into a pipe, made printable only on a terminal
    assert main(["--db", str(db), "export", str(conv.id)]) == 0
    assert evil in capsys.readouterr().out
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert main(["--db", str(db), "export", str(conv.id)]) == 0
    assert "\x1b" not in terminal.getvalue() and "␛[2J" in terminal.getvalue()


def test_doctor_and_plan_show_names_without_their_escapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from qwen_chat.cli import reports
    from qwen_chat.system.hardware import Device, Machine

    gpu = Device("CUDA0", "\x1b[31mEvil GPU\x1b[0m", "gpu", 1 << 30, 2 << 30)
    monkeypatch.setattr(reports, "detect", lambda: Machine(8 << 30, 8 << 30, 2, 2, (gpu,), True))
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "␛[31mEvil GPU␛[0m" in out
    assert main(["plan", str(tmp_path / "evil\x1b[2J.gguf")]) == 1
    assert "\x1b" not in capsys.readouterr().err
