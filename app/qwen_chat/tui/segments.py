"""Where a streamed Markdown text may be cut into separately rendered segments. Pure Python, no Textual.

Textual's Markdown widget re-parses an appended document from the start of its last block, and rebuilds
that block's widgets. A long numbered list, a long code block or a long table is one block, so each batch of
tokens would re-parse and rebuild everything streamed so far: the cost of a batch grows with the answer. The
stream is therefore cut into segments, each its own Markdown widget; only the last one (the live segment)
is ever re-parsed, and once it is long enough a cut starts a new one. A cut is made only where the rendering
stays the same:
- before a block that starts at the left margin after a blank line (a new paragraph, heading, list, table);
- between two items of a list (the next segment's list starts at that item's number, as Markdown says);
- inside a fenced code block, between two lines: the segment is closed with the fence (`close`) and the next
  one re-opens it with the same fence line (`reopen`), so both halves render as code;
- inside a table, between two rows: the next segment repeats the header and delimiter rows (`reopen`) so that
  it parses as the same table; the widget hides that header and draws every part of the table at least as
  wide as its first part (`widths`), so the parts line up (a column widens only where a later row needs it).
The start of a line is held back until enough of it has arrived to tell which case it is (a few characters).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# A cut is looked for once the live segment has this many lines or characters: they bound the cost of drawing
# it again (about 1 ms per 150 characters here).
SEGMENT_LINES = 10
SEGMENT_CHARS = 400

_LIST_ITEM = re.compile(r"(\d{1,9}[.)]|[-*+])( |$)")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_TABLE_DELIMITER = re.compile(r" {0,3}\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*")
_DECIDE_AT = 12  # characters of a new line that are enough to tell what it starts


@dataclass(frozen=True)
class Append:
    text: str


@dataclass(frozen=True)
class Cut:
    """End the live segment here (appending `close` to it) and start a new one that begins with `reopen`.
    Neither is part of the answer's text: they only keep a code block whole in both segments."""

    kind: str  # "block" (after a blank line), "list" (between two items), "fence" (in code), "table" (in a table)
    close: str = ""
    reopen: str = ""
    widths: tuple[int, ...] = ()  # for "table": the column widths every part of the table is drawn with


Op = Append | Cut


class Segmenter:
    """Feed the streamed text; get Append and Cut operations for the segments, in order."""

    def __init__(self, segment_lines: int = SEGMENT_LINES, segment_chars: int = SEGMENT_CHARS) -> None:
        self.segment_lines = segment_lines
        self.segment_chars = segment_chars
        self._chars = 0  # characters in the live segment
        self._held = ""  # the start of a line, held back until it is known whether to cut before it
        self._line = ""  # the current line so far (what was appended of it)
        self._at_line_start = True
        self._lines = 0  # complete lines in the live segment
        self._fence: tuple[str, str] | None = None  # (fence marker, opening line) while inside a code block
        self._table: _Table | None = None  # while inside a table
        self._previous = ""  # the last complete line
        self._list_open = False  # the lines since the last top-level list item all belong to its list

    def feed(self, text: str) -> list[Op]:
        ops: list[Op] = []
        self._held += text
        while self._held:
            if self._at_line_start:
                cut = self._decide(self._held, final=False)
                if cut is None:
                    break  # wait for more of this line
                self._at_line_start = False
                if cut is not False:
                    ops.append(cut)
                    self._lines = self._chars = 0
            end = self._held.find("\n")
            piece = self._held if end < 0 else self._held[: end + 1]
            self._held = self._held[len(piece):]
            ops.append(Append(piece))
            self._chars += len(piece)
            if end < 0:
                self._line += piece
            else:
                self._end_line(self._line + piece[:-1])
        return _merged(ops)

    def finish(self) -> list[Op]:
        """The rest of the text: nothing is held back any more."""
        ops: list[Op] = [Append(self._held)] if self._held else []
        self._held = ""
        return ops

    def _end_line(self, line: str) -> None:
        self._line = ""
        self._at_line_start = True
        self._lines += 1
        self._track_blocks(line)
        self._previous = line

    def _track_blocks(self, line: str) -> None:
        if line[:1] not in ("", " ", "\t"):
            self._list_open = bool(_LIST_ITEM.match(line))
        if self._fence is not None:
            marker = self._fence[0]
            stripped = line.strip()
            if stripped.startswith(marker) and set(stripped) == {marker[0]}:
                self._fence = None
            return
        opened = _FENCE.match(line)
        if opened:
            self._fence, self._table = (opened.group(1), line), None
        elif self._table is not None:
            self._table = self._table.row(line) if "|" in line else None
        elif "|" in line and "|" in self._previous and _TABLE_DELIMITER.fullmatch(line):
            self._table = _Table(self._previous, line, tuple(len(c) for c in _cells(self._previous)))

    def _decide(self, head: str, final: bool) -> Cut | Literal[False] | None:
        """Cut before the line that begins with `head`? A Cut, False, or None (need more characters)."""
        if self._lines < self.segment_lines and self._chars < self.segment_chars:
            return False
        if "\n" not in head and len(head) < _DECIDE_AT and not final:
            return None
        line = head.split("\n", 1)[0]
        if self._fence is not None:
            marker, opening = self._fence
            if line.strip().startswith(marker[0]):
                return False  # maybe the closing fence: never leave it alone in a segment
            return Cut("fence", close=marker, reopen=opening + "\n")  # the cut is at a line start: close is a line
        if self._table is not None:
            if "|" not in line or self._previous == self._table.delimiter:
                return False  # the end of the table, or its first row (a table needs one)
            if not self._table.frozen and self._lines < 2 * self.segment_lines:
                return False  # the first part sets the widths of all: let it see more rows
            self._table.frozen = True  # every later part is drawn with the widths of the first one
            return Cut("table", reopen=f"{self._table.header}\n{self._table.delimiter}\n", widths=self._table.widths)
        if not line or line[0] in " \t|":
            return False  # an indented line continues what is above it
        if not self._previous.strip():
            return Cut("block")
        if _LIST_ITEM.match(line) and self._list_open:
            return Cut("list")  # the next item of a top-level list
        return False


@dataclass
class _Table:
    header: str
    delimiter: str
    widths: tuple[int, ...]  # the widest cell of each column so far (until the first cut)
    frozen: bool = False

    def row(self, line: str) -> _Table:
        if not self.frozen:
            cells = [len(c) for c in _cells(line)]
            self.widths = tuple(max(w, c) for w, c in zip(self.widths, cells + [0] * len(self.widths), strict=False))
        return self


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def _merged(ops: list[Op]) -> list[Op]:
    out: list[Op] = []
    for op in ops:
        if isinstance(op, Append) and out and isinstance(out[-1], Append):
            out[-1] = Append(out[-1].text + op.text)
        else:
            out.append(op)
    return out


def split_segments(text: str, segment_lines: int = SEGMENT_LINES, segment_chars: int = SEGMENT_CHARS) -> list[str]:
    """A whole text as the segment sources streaming it would give."""
    segmenter = Segmenter(segment_lines, segment_chars)
    segments: list[list[str]] = [[]]
    for op in segmenter.feed(text) + segmenter.finish():
        if isinstance(op, Append):
            segments[-1].append(op.text)
        else:
            segments[-1].append(op.close)
            segments.append([op.reopen])
    return ["".join(parts) for parts in segments]
