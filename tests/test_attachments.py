"""Files attached with /file: checked when attached, sent as fenced blocks, stored with the message (never read
from disk again), shown, searchable, exported and imported. The real app under Pilot, a real SQLite file."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import DirectoryTree, Input

from qwen_chat.cli.ask import STDIN_LIMIT, AskInputError, question_from
from qwen_chat.session.attachments import MAX_BYTES, AttachmentError, read_attachment, with_files
from qwen_chat.store.database import Store
from qwen_chat.store.export import from_json, to_json, to_markdown
from qwen_chat.store.records import Attachment
from qwen_chat.tui import attachment_bar
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
        bar = app.query_one(AttachmentBar)
        await wait_for(pilot, lambda: bar.files and "📎 notes.md" in screen_text(app), what="the file's chip")
        assert [f.name for f in bar.files] == ["notes.md"] and bar.display and composer.value == ""
        assert "📎 notes.md · about" in " ".join(screen_text(app).split())  # the chip, before sending
        composer.value = "How long did it run?"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.chat.transcript.live is None and len(app.query(AssistantMessage)) == 1,
                       what="answer")
        assert not bar.files and not bar.display
        prompt = engine.requests[-1].prompt
        assert "How long did it run?\n\nnotes.md:\n````\n# Notes" in prompt  # the file went to the model, fenced
        notes.write_text("changed on disk afterwards")  # what was sent is kept, never read again
        question = app.session.store.messages(app.conversation.current.id)[0]
        assert question.attachments == (Attachment("notes.md", NOTES, bar_tokens := question.attachments[0].tokens),)
        assert bar_tokens > 0
        hits = app.session.store.search("zebrafish")
        assert [h.message_id for h in hits] == [question.id] and "notes.md" in hits[0].snippet
        exported = to_json(app.session.store, app.conversation.current)
        assert "zebrafish" in to_markdown(app.session.store, app.conversation.current)
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
            await wait_for(pilot, lambda why=reason: any(why in str(n.message) for n in app._notifications),
                           what=reason)
            assert composer.value == f"/file {path}"  # kept, to be corrected
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


# -- files that never end: devices, FIFOs, sockets ------------------------------------------------------------------

NOT_A_FILE = "not a file; only regular text files can be attached"


def _unblock_fifo_later(fifo: Path, after: float = 5, until: float = 20) -> None:
    """A safety net for code that opens `fifo` waiting for a writer (the old code did, on the UI thread): after
    `after` seconds, briefly be that writer, so such a test fails on its assertions instead of hanging. It only
    ever opens the FIFO when a reader is already waiting on it (O_NONBLOCK), so the code under test never sees it."""

    def writer() -> None:
        time.sleep(after)
        deadline = time.monotonic() + until
        while time.monotonic() < deadline:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader waiting (ENXIO), or the folder is gone: nothing to unblock
                time.sleep(0.1)

    threading.Thread(target=writer, daemon=True).start()


def test_devices_fifos_and_sockets_are_refused_without_being_opened_for_reading(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a socket's path must be short (108 bytes): bound relative to here
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("app.sock")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    _unblock_fifo_later(fifo)
    (tmp_path / "zero-link").symlink_to("/dev/zero")
    (tmp_path / "notes.md").write_text(NOTES)
    (tmp_path / "link.md").symlink_to(tmp_path / "notes.md")
    assert read_attachment(tmp_path / "link.md").content == NOTES  # a link to a regular file is fine
    try:
        # the socket first: the old code failed it at once (ENXIO), before it could reach /dev/zero and read forever
        for path, kind in [(tmp_path / "app.sock", "a socket"), (fifo, "a named pipe (FIFO)"),
                           (Path("/dev/zero"), "a device"), (Path("/dev/null"), "a device"),
                           (tmp_path / "zero-link", "a device")]:
            with pytest.raises(AttachmentError) as refused:
                read_attachment(path)
            assert str(refused.value) == f"{path} is {kind}, {NOT_A_FILE}"
    finally:
        server.close()


def test_the_opened_file_is_what_is_checked_not_the_path_stat_saw(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A path swapped for a FIFO between the check and the open (simulated: stat reports the regular file it was)
    is still refused, without blocking: the descriptor is opened non-blocking and fstat'ed."""
    regular = tmp_path / "notes.md"
    regular.write_text(NOTES)
    fifo = tmp_path / "swapped"
    os.mkfifo(fifo)
    _unblock_fifo_later(fifo)
    real_stat = os.stat
    # os itself: pathlib's stat (the old code's) and os.stat alike see the regular file
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: real_stat(regular, *a, **k)
                        if Path(path) == fifo else real_stat(path, *a, **k))
    with pytest.raises(AttachmentError) as refused:
        read_attachment(fifo)
    monkeypatch.undo()
    assert str(refused.value) == f"{fifo} is a named pipe (FIFO), {NOT_A_FILE}"


def test_a_file_that_says_it_is_empty_is_read_only_up_to_the_limit(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """st_size can lie (0 for /proc files, a file still growing): what is read is bounded all the same."""
    big = tmp_path / "grows.log"
    big.write_text("x" * (3 * MAX_BYTES))
    real_stat, real_fstat, real_read = os.stat, os.fstat, os.read

    def says_empty(info: os.stat_result) -> os.stat_result:
        fields = list(info)
        fields[stat.ST_SIZE] = 0
        return os.stat_result(fields)

    taken: list[int] = []

    def counted_read(fd: int, n: int) -> bytes:
        data = real_read(fd, n)
        taken.append(len(data))
        return data

    monkeypatch.setattr(os, "stat", lambda path, *a, **k: says_empty(real_stat(path, *a, **k)))
    monkeypatch.setattr(os, "fstat", lambda fd: says_empty(real_fstat(fd)))
    monkeypatch.setattr(os, "read", counted_read)
    with pytest.raises(AttachmentError) as refused:
        read_attachment(big)
    monkeypatch.undo()
    assert str(refused.value) == ("grows.log is over 512 KB; files up to 512 KB can be attached (paste the part that "
                                  "matters instead)")
    assert sum(taken) == MAX_BYTES + 1


async def test_file_on_a_fifo_or_dev_zero_is_refused_at_once_and_the_app_keeps_answering(
        tiny_models: dict[str, Path], tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    _unblock_fifo_later(fifo)  # the old code froze here until a writer came; this one comes after 5 s
    app = make_app(tmp_path / "chat.db", tiny_models["none"], n_ctx=2048, engine=FakeEngine.scripted())
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="model load")
        composer = app.query_one("#prompt", Composer)
        composer.focus()
        # the FIFO first: the old code, released by the writer above, attached it (empty) and failed here, before
        # /dev/zero (which it read until the memory ran out)
        for path, kind in [(fifo, "a named pipe (FIFO)"), (Path("/dev/zero"), "a device")]:
            composer.value = f"/file {path}"
            await pilot.press("enter")
            expected = f"Not attached: {path} is {kind}, {NOT_A_FILE}."
            await wait_for(pilot, lambda e=expected: any(str(n.message) == e for n in app._notifications),
                           timeout=10, what=f"the refusal of {path}")
            assert composer.value == f"/file {path}"  # kept, to be corrected
            await pilot.press("end", "x")  # the app still takes keys
            await wait_for(pilot, lambda typed=f"/file {path}x": composer.value == typed, timeout=10,
                           what="a key to arrive")
        assert not app.query_one(AttachmentBar).files


async def test_a_file_is_read_off_the_ui_thread_while_keys_still_arrive(tiny_models: dict[str, Path], tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text(NOTES)
    gate, readers = threading.Event(), []

    def slow_read(path: Path) -> Attachment:  # a slow disk or network share, held until the test lets it go
        readers.append(threading.current_thread())
        gate.wait(10)  # bounded: read on the UI thread (the old code) this froze the app for 10 s, not forever
        return read_attachment(path)

    monkeypatch.setattr(attachment_bar, "read_attachment", slow_read)
    app = make_app(tmp_path / "chat.db", tiny_models["none"], n_ctx=2048, engine=FakeEngine.scripted())
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="model load")
        composer = app.query_one("#prompt", Composer)
        composer.focus()
        composer.value = f"/file {notes}"
        await pilot.press("enter")
        await wait_for(pilot, lambda: readers, timeout=10, what="the read to start")
        assert readers[0] is not threading.current_thread()  # the test runs on the UI thread (the app's loop)
        await pilot.press("end", "!")
        await wait_for(pilot, lambda: composer.value == f"/file {notes}!", timeout=5, what="a key during the read")
        assert not gate.is_set() and not app.query_one(AttachmentBar).files
        gate.set()
        await wait_for(pilot, lambda: app.query_one(AttachmentBar).files, timeout=10, what="the file attached")
        assert composer.value == f"/file {notes}!"  # typed while it was read: kept, not cleared


async def test_the_picker_tree_draws_every_name_printable_and_refuses_a_fifo(
        tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    names = {"\x1b]0;pwned\x07.txt": "\u241b]0;pwned\u2407.txt", "[bold]loud.md": "[bold]loud.md",
             "two\nlines.txt": "two lines.txt"}
    for name in names:
        (tmp_path / name).write_text("a few words\n")
    os.mkfifo(tmp_path / "pipe")
    _unblock_fifo_later(tmp_path / "pipe")
    app = make_app(tmp_path / "chat.db", tiny_models["none"], n_ctx=2048, engine=FakeEngine.scripted())
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="model load")
        picker = await _open_picker(pilot)
        tree = picker.query_one(DirectoryTree)

        def labels() -> set[str]:
            return {node.label.plain if isinstance(node.label, Text) else node.label for node in tree.root.children}

        await wait_for(pilot, lambda: "pipe" in labels(), timeout=10, what="the folder listed")
        assert set(names.values()) <= labels(), labels()  # shown as named: symbols for controls, markup as typed
        assert all(not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in label) for label in labels())
        shown = screen_text(app)
        assert "\u241b]0;pwned\u2407.txt" in shown and "[bold]loud.md" in shown and "\x1b" not in shown
        await pilot.press(*"pipe", "enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, FilePicker), what="the picker to close")
        expected = f"Not attached: pipe is a named pipe (FIFO), {NOT_A_FILE}."
        await wait_for(pilot, lambda: any(str(n.message) == expected for n in app._notifications), timeout=10,
                       what="the FIFO refused")
        assert not app.query_one(AttachmentBar).files


# -- qwen-chat ask: stdin is read up to its limit, never to an end that may not come -------------------------------


def test_ask_refuses_dev_zero_on_stdin_with_a_clear_message_and_code_2() -> None:
    with open("/dev/zero", "rb") as zero:
        result = subprocess.run([sys.executable, "-m", "qwen_chat", "ask", "--endpoint", "http://127.0.0.1:9/v1",
                                 "--api-key", "k"], stdin=zero, capture_output=True, text=True, timeout=60,
                                env=os.environ.copy())
    assert result.returncode == 2, result.stderr
    assert result.stderr == ("qwen-chat: stdin is binary data, not text (it holds NUL bytes, like /dev/zero or a "
                             "program file): ask takes text\n")


class _Endless(io.StringIO):
    """A stdin stand-in without a byte buffer that never ends (`yes`): reading it to the end is the bug."""

    def read(self, size: int | None = -1) -> str:
        if size is None or size < 0:
            raise AssertionError("stdin was read to its end, and this one has none")
        return ("y\n" * (size // 2 + 1))[:size]


def test_ask_reads_a_stdin_without_bytes_only_up_to_the_limit() -> None:
    with pytest.raises(AskInputError, match=f"stdin holds more than {STDIN_LIMIT >> 20} MiB"):
        question_from("-", _Endless())
