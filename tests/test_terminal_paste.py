"""A paste into the composer in a real terminal: the real `qwen-chat` in a detached tmux session, chatting
through the loopback replay server, gets a multi-line text as a bracketed paste, and Enter stores exactly that
text (tabs, indentation, blank lines, trailing whitespace) in the real SQLite database.

The Pilot tests post a Paste event straight to the widget; only a terminal shows what the escape-sequence
parser makes of the bytes: tmux sends the paste between ESC[200~ and ESC[201~ with each newline as a carriage
return, as terminals do, so a parser that took the paste for typed keys would send the first line alone."""

from __future__ import annotations

import shlex
import sqlite3
import sys
from pathlib import Path

import pytest

from replay_server import ReplayServer

from helpers import TMUX, Tmux, wait_until

pytestmark = pytest.mark.skipif(TMUX is None, reason="needs tmux (apt-get install tmux)")

PASTED = ("Please review this:\n"
          "\n"
          "def total(items):\n"
          "\tresult = 0\n"
          "\tfor item in items:\n"
          "\t\tresult += item  \t# a tab and spaces inside\n"
          "\n"
          "\n"
          "        return result    \n"
          "  indented by two, then a blank line with spaces\n"
          "   \n"
          "café, 你好, done\n")


def user_messages(db: Path) -> list[str]:
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [row[0] for row in conn.execute("SELECT content FROM messages WHERE role = 'user' ORDER BY id")]


def start_chat(tmp_path: Path, replay: ReplayServer, **extra_env: str) -> tuple[Tmux, Path]:
    """The real app in a tmux session of its own, on the replay endpoint, ready for input; and its database."""
    db = tmp_path / "chat.db"
    env = {"QWEN_CHAT_DATA_DIR": str(tmp_path / "data"), "QWEN_CHAT_CONFIG_DIR": str(tmp_path / "config"),
           "TERM": "xterm-256color", "LANG": "C.UTF-8", "TEXTUAL_DISABLE_KITTY_KEY": "1", **extra_env}
    command = shlex.join(["env", *(f"{k}={v}" for k, v in env.items()), sys.executable, "-m", "qwen_chat",
                          "--endpoint", replay.url, "--db", str(db)])
    tmux = Tmux("paste")
    try:
        tmux.start(command)
        wait_until(lambda: "ready" in tmux.screen(), timeout=60, what="the chat to open on the endpoint")
    except BaseException:
        tmux.close()
        raise
    return tmux, db


def paste(tmux: Tmux, text: Path) -> None:
    tmux("load-buffer", "-b", "pasted", str(text))
    tmux("paste-buffer", "-p", "-d", "-b", "pasted", "-t", f"={tmux.session}:")  # -p: bracketed


def test_a_bracketed_paste_is_stored_exactly(tmp_path: Path, replay: ReplayServer) -> None:
    text = tmp_path / "pasted.txt"
    text.write_bytes(PASTED.encode("utf-8"))
    tmux, db = start_chat(tmp_path, replay)
    try:
        paste(tmux, text)
        # the paste is one event: its last line on screen means all of it is in the composer (which scrolls)
        wait_until(lambda: "café, 你好, done" in tmux.screen(), timeout=30, what="the pasted text in the composer")
        assert user_messages(db) == []  # the newlines in the paste sent nothing
        tmux("send-keys", "-t", f"={tmux.session}:", "Enter")
        stored = wait_until(lambda: user_messages(db), timeout=30, what="the message in the database")
        assert stored == [PASTED], tmux.screen()
        wait_until(lambda: "Hello there!" in tmux.screen(), timeout=30, what="the replayed answer")
        assert replay.requests[-1]["messages"][-1] == {"role": "user", "content": PASTED}
    finally:
        tmux.close()


# Issue 25. tmux 3.3 passes every byte of a buffer through paste-buffer -p unchanged (an ESC[201~ in it too,
# which no program can tell from the real end, so it is left out). Textual 8.2.8 alone turned what follows the
# ESC of the OSC title into key presses: BEL is Ctrl+G (the editor), DC1 is Ctrl+Q (quit), CR is Enter (send).
HOSTILE = {
    "quits": ("title \x1b]0;t\x07\x11 then a bell \x07 and Ctrl+Up \x1b[1;5A\n"
              "a nested start \x1b[200~ and \x1b[2J inside, done\n",
              "title ␛]0;t␇␑ then a bell ␇ and Ctrl+Up ␛[1;5A\n"
              "a nested start ␛[200~ and ␛[2J inside, done\n"),
    "opens the editor": ("title \x1b]0;t\x07 and on \x1b[200~ inside, done",
                         "title ␛]0;t␇ and on ␛[200~ inside, done"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_paste_is_only_text(tmp_path: Path, replay: ReplayServer, case: str) -> None:
    hostile, made_safe = HOSTILE[case]
    text, marker, editor = tmp_path / "hostile.bin", tmp_path / "editor-opened", tmp_path / "editor.sh"
    text.write_bytes(hostile.encode("utf-8"))
    editor.write_text(f"#!/bin/sh\ntouch {shlex.quote(str(marker))}\n")
    editor.chmod(0o755)
    tmux, db = start_chat(tmp_path, replay, EDITOR=str(editor), VISUAL=str(editor))
    try:
        paste(tmux, text)

        def settled() -> bool:  # the text shown, or the app gone or in the editor: fail fast, not at a timeout
            try:
                return marker.exists() or "inside, done" in tmux.screen()
            except AssertionError:  # no pane to capture: the app quit, its session and tmux server with it
                return True

        wait_until(settled, timeout=30, what="the pasted text in the composer")
        assert not marker.exists(), "the paste opened the editor (Ctrl+G)"
        assert tmux.alive(), "the paste quit the app (Ctrl+Q)"
        assert "␛]0;t␇" in tmux.screen()
        assert user_messages(db) == []  # no Enter came out of it either
        tmux("send-keys", "-t", f"={tmux.session}:", "Enter")
        stored = wait_until(lambda: user_messages(db), timeout=30, what="the message in the database")
        assert stored == [made_safe], tmux.screen()
        assert tmux.alive() and not marker.exists()
    finally:
        tmux.close()
