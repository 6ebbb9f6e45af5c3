"""The paste guard (tui/paste_guard.py) fed the bytes a terminal sends: a bracketed paste holding escape
sequences and control characters comes out as one Paste event of visible text, never as key presses, however
the terminal's reads split it; input outside a paste parses exactly as Textual's own parser reads it.

The real terminal (tmux) and the real app are in test_terminal_paste.py."""

from __future__ import annotations

import pytest
from textual import _parser, events
from textual._xterm_parser import XTermParser
from textual.drivers import linux_driver, linux_inline_driver
from textual.message import Message

from qwen_chat.tui.paste_guard import PasteGuardParser, install, made_safe

START, END = "\x1b[200~", "\x1b[201~"

# (what was copied, what the composer must get): the OSC title + BEL + Ctrl+Q, a lone BEL (Ctrl+G),
# CSI sequences (Ctrl+Up, clear screen), a nested paste start, a near-miss end marker, DEL, a C1 CSI, NUL,
# an ESC just before the real end marker, a tab and a pasted newline (CR)
HOSTILE = [
    ("keep\x1b]0;t\x07\x11 bell\x07\r\tup\x1b[1;5A csi\x1b[2J nested\x1b[200~ in\x1b[20x\x7f\x9b\x00 end\x1b",
     "keep␛]0;t␇␑ bell␇\r\tup␛[1;5A csi␛[2J nested␛[200~ in␛[20x␡\ufffd end␛"),
    # no ESC for more than 32 characters: Textual's search gives up and reissues all of it as keys
    ("\x1b]0;" + "x" * 40 + "\x11\x07 quit", "␛]0;" + "x" * 40 + "␑␇ quit"),
    ("\x1b\x1b\x1b[201", "␛␛␛[201"),  # only the end marker's first characters: the paste goes on
]


def parse(parser: XTermParser, chunks: list[str]) -> list[Message]:
    return [event for chunk in chunks for event in parser.feed(chunk)]


def described(messages: list[Message]) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for message in messages:
        if isinstance(message, events.Paste):
            out.append(("paste", message.text))
        elif isinstance(message, events.Key):
            out.append(("key", message.key))
        else:
            out.append((type(message).__name__, None))
    return out


def splits(data: str) -> list[list[str]]:
    """`data` in two reads cut at every position, and one character a read (an empty read is end of input)."""
    return [[data[:i], data[i:]] for i in range(1, len(data))] + [list(data)]


@pytest.mark.parametrize(("copied", "safe"), HOSTILE)
def test_a_hostile_paste_is_one_paste_of_safe_text_however_it_is_read(copied: str, safe: str) -> None:
    data = START + copied + END
    for chunks in splits(data):
        assert described(parse(PasteGuardParser(), chunks)) == [("paste", safe)], chunks


def test_keys_around_a_paste_are_still_keys() -> None:
    data = "a\x11" + START + "\x1b]0;t\x07\x11" + END + "\x1b[Ab"
    for chunks in splits(data):
        assert described(parse(PasteGuardParser(), chunks)) == [
            ("key", "a"), ("key", "ctrl+q"), ("paste", "␛]0;t␇␑"), ("key", "up"), ("key", "b")], chunks


def test_two_pastes_in_a_row_and_an_empty_one() -> None:
    data = START + "one\x07" + END + START + END + START + "two" + END
    assert described(parse(PasteGuardParser(), [data])) == [("paste", "one␇"), ("paste", ""), ("paste", "two")]


def test_outside_a_paste_it_reads_as_textual_does() -> None:
    data = "x\x1b[1;5A\x1b[200\x1b[<0;3;4M\x1b[I\x07\x1b\rz"
    for chunks in splits(data):
        assert described(parse(PasteGuardParser(), chunks)) == described(parse(XTermParser(), chunks)), chunks


def timed_out(parser: XTermParser, monkeypatch: pytest.MonkeyPatch) -> list[Message]:
    """What the parser gives when its escape delay has passed (the driver calls tick() every 0.1 s)."""
    with monkeypatch.context() as patch:
        patch.setattr(_parser, "get_time", lambda: float("inf"))
        return list(parser.tick())


def test_a_lone_escape_is_the_escape_key_after_the_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = PasteGuardParser()
    assert parse(parser, ["\x1b"]) == []
    assert described(timed_out(parser, monkeypatch)) == [("key", "escape")]


def test_escape_a_pause_then_the_marker_starts_no_paste(monkeypatch: pytest.MonkeyPatch) -> None:
    """Textual reads ESC, a pause, `[200~` as Escape and typed keys: the guard must not think a paste began
    (it would turn the arrow keys that follow into symbols)."""
    parser = PasteGuardParser()
    parse(parser, ["\x1b[20"])
    timed_out(parser, monkeypatch)
    keys = described(parse(parser, ["0~", "\x1b[A"]))
    assert keys == [("key", "0"), ("key", "tilde"), ("key", "up")]


def test_a_paste_left_open_at_the_end_of_input_is_dropped_quietly() -> None:
    parser = PasteGuardParser()
    assert parse(parser, [START + "half\x1b[20", ""]) == []
    assert parser.is_eof


def test_made_safe_keeps_line_breaks_and_tabs() -> None:
    assert made_safe("a\r\nb\tc\x1b\x00\x85") == "a\r\nb\tc␛\ufffd"


def test_install_points_the_terminal_drivers_at_the_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (linux_driver, linux_inline_driver):  # put back after the test
        monkeypatch.setattr(module, "XTermParser", module.XTermParser)
    install()
    install()  # twice is harmless
    assert linux_driver.XTermParser is PasteGuardParser
    assert linux_inline_driver.XTermParser is PasteGuardParser


def test_textual_s_own_parser_still_needs_the_guard() -> None:
    """Issue 25 as Textual 8.2.8 has it: the paste's bytes after its ESC come out as key presses (Ctrl+G opens
    the editor, Ctrl+Q quits). Should this fail after a Textual upgrade, the upgrade fixed the parser and
    paste_guard.py may be retired."""
    keys = described(parse(XTermParser(), [START + "\x1b]0;t\x07\x11" + END]))
    assert ("key", "ctrl+g") in keys and ("key", "ctrl+q") in keys
