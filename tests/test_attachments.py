"""Files attached with /file: checked when attached, sent as fenced blocks, stored with the message (never read
from disk again), shown, searchable, exported and imported. The real app under Pilot, a real SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DirectoryTree, Input

from qwen_chat.session.attachments import AttachmentError, read_attachment, with_files
from qwen_chat.store.database import Store
from qwen_chat.store.export import from_json, to_json, to_markdown
from qwen_chat.store.records import Attachment
from qwen_chat.tui.attachment_bar import AttachmentBar
from qwen_chat.tui.composer import Composer
from qwen_chat.tui.file_picker import FilePicker
from qwen_chat.tui.messages import AssistantMessage

from fake_engine import FakeEngine, Reply
from helpers import SIZE, make_app, screen_text, status, wait_for, write_settings

NOTES = "# Notes\n\nThe zebrafish experiment ran for 3 days.\n```python\nprint('inside a fence')\n```\n"


def test_a_text_file_is_read_and_everything_else_is_refused_with_the_reason(tmp_path: Path) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text(NOTES)
    attached = read_attachment(notes)
    assert (attached.name, attached.content) == ("notes.md", NOTES) and attached.tokens > 10
    (tmp_path / "blob.bin").write_bytes(b"\x7fELF\0\0\1")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "big.log").write_text("x" * (600 * 1024))
    for name, reason in [("blob.bin", "binary file"), ("latin1.txt", "not UTF-8"), ("big.log", "up to 512 KB"),
                         ("missing.txt", "there is no file"), (".", "is a folder")]:
        with pytest.raises(AttachmentError, match=reason):
            read_attachment(tmp_path / name)


def test_the_model_sees_each_file_in_a_fence_its_own_backticks_cannot_close() -> None:
    text = with_files("Summarise.", (Attachment("notes.md", NOTES),))
    assert text.startswith("Summarise.\n\nnotes.md:\n````\n# Notes")  # four backticks: the file has three
    assert text.endswith("print('inside a fence')\n```\n````")


async def test_attach_send_show_search_export_and_import(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text(NOTES)
    engine = FakeEngine.scripted([Reply("It ran for three days.")])
    db = tmp_path / "chat.db"
    app = make_app(db, tiny_models["none"], n_ctx=2048, engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="model load")
        composer = app.query_one("#prompt", Composer)
        composer.focus()
        composer.value = f"/file {notes}"
        await pilot.press("enter")
        await pilot.pause(0.1)
        bar = app.query_one(AttachmentBar)
        assert [f.name for f in bar.files] == ["notes.md"] and bar.display and composer.value == ""
        assert "📎 notes.md · about" in " ".join(screen_text(app).split())  # the chip, before sending
        composer.value = "How long did it run?"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app._live is None and len(app.query(AssistantMessage)) == 1, what="answer")
        assert not bar.files and not bar.display
        prompt = engine.requests[-1].prompt
        assert "How long did it run?\n\nnotes.md:\n````\n# Notes" in prompt  # the file went to the model, fenced
        notes.write_text("changed on disk afterwards")  # what was sent is kept, never read again
        question = app.store.messages(app.conversation.id)[0]
        assert question.attachments == (Attachment("notes.md", NOTES, bar_tokens := question.attachments[0].tokens),)
        assert bar_tokens > 0
        hits = app.store.search("zebrafish")
        assert [h.message_id for h in hits] == [question.id] and "notes.md" in hits[0].snippet
        exported = to_json(app.store, app.conversation)
        assert "zebrafish" in to_markdown(app.store, app.conversation)
    store = Store(db)
    copy = from_json(store, exported)
    (imported, _) = store.messages(copy.id)
    assert imported.attachments == (Attachment("notes.md", NOTES, bar_tokens),)
    assert json.loads(exported)["messages"][0]["attachments"][0]["name"] == "notes.md"
    store.close()


async def test_a_file_too_big_for_the_context_or_unreadable_is_refused_and_the_path_kept(
        tiny_models: dict[str, Path], tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text("word " * 4000)  # about 5,500 tokens: more than a 512-token context holds
    app = make_app(tmp_path / "chat.db", tiny_models["none"], n_ctx=512, engine=FakeEngine.scripted())
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="model load")
        composer = app.query_one("#prompt", Composer)
        for path, reason in [(big, "the context has room for 512"), (tmp_path / "nope.txt", "there is no file")]:
            composer.value = f"/file {path}"
            await pilot.press("enter")
            await pilot.pause(0.1)
            assert composer.value == f"/file {path}"  # kept, to be corrected
            assert any(reason in str(n.message) for n in app._notifications), reason
        assert not app.query_one(AttachmentBar).files


# -- Ctrl+O: the file picker ----------------------------------------------------------------------------------------


async def _open_picker(pilot: Pilot, key: str = "ctrl+o") -> FilePicker:
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, FilePicker), timeout=10, what="the file picker")
    assert isinstance(pilot.app.screen, FilePicker)
    return pilot.app.screen


async def test_ctrl_o_attaches_a_typed_path_and_one_picked_in_the_tree_as_file_does(
        tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the tree starts in the working folder
    (tmp_path / "notes.md").write_text(NOTES)
    (tmp_path / "todo.txt").write_text("water the plants\n")
    (tmp_path / "blob.bin").write_bytes(b"\x7fELF\0\0\1")
    write_settings('[keys]\nattach-file = "ctrl+o,f10"\n')  # the picker's key can be remapped like any other
    app = make_app(tmp_path / "chat.db", tiny_models["none"], n_ctx=2048, engine=FakeEngine.scripted())
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="model load")
        bar = app.query_one(AttachmentBar)
        await _open_picker(pilot)
        await wait_for(pilot, lambda: "todo.txt" in screen_text(app), what="the working folder in the tree")
        await pilot.press(*"notes.md", "enter")  # typed, relative to the working folder as /file reads it
        await wait_for(pilot, lambda: not isinstance(app.screen, FilePicker), what="the picker to close")
        assert [f.name for f in bar.files] == ["notes.md"]
        assert "📎 notes.md · about" in " ".join(screen_text(app).split())  # the chip
        assert any("Attached notes.md (about" in str(n.message) for n in app._notifications)

        picker = await _open_picker(pilot, "f10")
        tree = picker.query_one(DirectoryTree)
        await pilot.press("tab")  # from the path box to the tree
        await wait_for(pilot, lambda: any(getattr(node.data, "path", None) == tmp_path / "todo.txt"
                                          for node in tree.root.children), what="the tree to list the folder")
        for _ in range(len(tree.root.children)):
            await pilot.press("down")
            if tree.cursor_node is not None and getattr(tree.cursor_node.data, "path", None) == tmp_path / "todo.txt":
                break
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, FilePicker), what="the picker to close")
        assert [f.name for f in bar.files] == ["notes.md", "todo.txt"]
        assert "📎 todo.txt · about" in " ".join(screen_text(app).split())

        await _open_picker(pilot)  # a file /file refuses is refused here, with the same words
        await pilot.press(*"blob.bin", "enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, FilePicker), what="the picker to close")
        with pytest.raises(AttachmentError) as refused:
            read_attachment(tmp_path / "blob.bin")
        assert any(str(n.message) == f"Not attached: {refused.value}." for n in app._notifications)
        assert [f.name for f in bar.files] == ["notes.md", "todo.txt"]


async def test_esc_closes_the_file_picker_and_attaches_nothing(tiny_models: dict[str, Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.md").write_text(NOTES)
    app = make_app(tmp_path / "chat.db", tiny_models["none"], engine=FakeEngine.scripted())
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="model load")
        picker = await _open_picker(pilot)
        await pilot.press(*"docs", "enter")  # a folder is not attached: the tree shows it instead
        tree = picker.query_one(DirectoryTree)
        await wait_for(pilot, lambda: Path(tree.path) == tmp_path / "docs" and "notes.md" in screen_text(app),
                       timeout=10, what="the tree to show the typed folder")
        assert isinstance(app.screen, FilePicker) and picker.query_one(Input).value == ""
        await pilot.press(*"docs/notes.md", "escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, FilePicker), what="the picker to close")
        bar = app.query_one(AttachmentBar)
        assert not bar.files and not bar.display and "📎" not in screen_text(app)
        assert isinstance(app.focused, Composer)  # back to the message being written
