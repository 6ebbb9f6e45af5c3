"""Markdown that streams at a constant cost per batch: a column of segments, only the last one redrawn.

Textual's Markdown widget builds several widgets per block and list item and re-composes the last block on
every append: a 60-item list cost 230 ms of UI time per batch of tokens here, and the layout of every later
frame walks all of those widgets. Each segment here is one widget drawing Rich's Markdown renderer: a frozen
segment is drawn once and its lines kept, and only the live segment (at most segments.SEGMENT_LINES lines) is parsed
and drawn again when text arrives. See segments.py for where a text is cut so that it renders the same.
Model text is sanitized (control characters shown as symbols) before it is parsed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import ClassVar

from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound
from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markdown import CodeBlock, Heading, Markdown, TableElement
from rich.segment import Segment as RichSegment
from rich.style import Style
from rich.syntax import Syntax, SyntaxTheme
from rich.table import Table
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget

from qwen_chat.tui.printable import printable
from qwen_chat.tui.segments import Append, Cut, Op, Segmenter


class _LeftHeading(Heading):
    """Headings on the left, as in the rest of a chat (Rich centres h1)."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        text = self.text.copy()
        text.justify = "left"
        yield text


@functools.lru_cache(maxsize=64)
def _lexer(name: str) -> Lexer | str:
    """Pygments looks a lexer up by name through its plugin registry each time: once per language is enough."""
    try:
        return get_lexer_by_name(name)
    except ClassNotFound:
        return "text"


@functools.lru_cache(maxsize=8)
def _syntax_theme(name: str) -> SyntaxTheme:
    return Syntax.get_theme(name)


class _FlushCodeBlock(CodeBlock):
    """Code without blank padding rows, so that a code block cut into two segments shows no seam."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Syntax(str(self.text).rstrip(), _lexer(self.lexer_name), theme=_syntax_theme(self.theme),
                     word_wrap=True, padding=(0, 1))


class _PartTable(TableElement):
    """A table that may be one part of a table cut into segments: drawn with the widths of the first part, and
    without its (repeated) header when it continues one."""

    widths: tuple[int, ...] = ()
    continued = False

    @classmethod
    def create(cls, markdown: Markdown, token: object) -> _PartTable:
        table = cls()
        if isinstance(markdown, ChatMarkdown) and not markdown.tables_seen:
            table.widths, table.continued = markdown.table_widths, markdown.table_continued  # its first table
        if isinstance(markdown, ChatMarkdown):
            markdown.tables_seen += 1
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = Table(box=box.SIMPLE, pad_edge=False, style="markdown.table.border", show_edge=False,
                      collapse_padding=True, show_header=not self.continued)
        header = self.header.row.cells if self.header is not None and self.header.row is not None else []
        widths = self.widths if len(self.widths) == len(header) else (None,) * len(header)
        for column, width in zip(header, widths, strict=True):
            heading = column.content.copy()
            heading.stylize("markdown.table.header")
            # at least the first part's widths (the parts line up); wider where a later row needs it (a longer number)
            table.add_column(heading, min_width=width, overflow="fold")
        for row in self.body.rows if self.body is not None else []:
            table.add_row(*(cell.content for cell in row.cells))
        yield table


class ChatMarkdown(Markdown):
    elements: ClassVar = {**Markdown.elements, "heading_open": _LeftHeading, "fence": _FlushCodeBlock,
                          "code_block": _FlushCodeBlock, "table_open": _PartTable}

    def __init__(self, source: str, *, table_widths: tuple[int, ...] = (), table_continued: bool = False,
                 **options: object) -> None:
        self.table_widths, self.table_continued, self.tables_seen = table_widths, table_continued, 0
        super().__init__(source, **options)  # type: ignore[arg-type]  # Markdown's own keyword options


def _draw_markdown(widget: Widget, source: str, width: int, table_widths: tuple[int, ...] = (),
                   table_continued: bool = False) -> list[Strip]:
    if not source.strip() or width <= 0:
        return []
    dark = widget.app.current_theme.dark
    markdown = ChatMarkdown(source, code_theme="monokai" if dark else "friendly", hyperlinks=True,
                            table_widths=table_widths, table_continued=table_continued)
    console = widget.app.console
    options = console.options.update(width=width, height=None, highlight=False)
    base = widget.rich_style
    rows = console.render_lines(markdown, options, style=base, pad=True)
    return [Strip(row, width) for row in _trimmed(rows, base)]


class _DrawnLines(Widget):
    """A widget whose lines are drawn by `_draw(width)` (and kept): its height and its lines come from them."""

    def _draw(self, width: int) -> list[Strip]:
        """Each kind's own lines (Segment, FrozenSegments); none for this base."""
        return []

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self._draw(width))

    def render_line(self, y: int) -> Strip:
        width = self.content_size.width
        lines = self._draw(width)
        return lines[y] if y < len(lines) else Strip.blank(width, self.rich_style)


class Segment(_DrawnLines):
    """One segment of a streamed Markdown text, drawn once per change of text or width.

    A Static with a Rich renderable would render it twice per change (once to measure its height, once to
    draw it); this keeps the rendered lines and serves both from them.
    """

    def __init__(self, source: str, classes: str = "", table_widths: tuple[int, ...] = (),
                 table_continued: bool = False) -> None:
        super().__init__(classes=classes)
        self.source = source
        self.table_widths = table_widths  # see _PartTable
        self.table_continued = table_continued
        self._lines: list[Strip] = []
        self._drawn: tuple[int, str, bool, tuple[int, ...]] | None = None  # what the lines were drawn for

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.refresh(layout=True))  # code colours

    def append(self, text: str) -> None:
        self.source += text  # bounded by the segment's size, not the answer's
        self.refresh(layout=True)

    def _draw(self, width: int) -> list[Strip]:
        key = (width, self.source, self.app.current_theme.dark, self.table_widths)
        if self._drawn != key:
            self._drawn = key
            self._lines = _draw_markdown(self, self.source, width, self.table_widths, self.table_continued)
        return self._lines

    @property
    def drawn_width(self) -> int:
        """The width its lines were drawn at for its current text, or -1 (not drawn since it changed)."""
        if self._drawn is None or self._drawn[1:] != (self.source, self.app.current_theme.dark, self.table_widths):
            return -1
        return self._drawn[0]



class FrozenSegments(_DrawnLines):
    """Many frozen segments as one widget, their drawn lines reused (Textual walks every widget on each layout:
    a 40,000-token list of single segments cost 80 ms a batch, eight times what it cost at the start)."""

    def __init__(self, widgets: Sequence[Segment | FrozenSegments]) -> None:
        super().__init__(classes=" ".join(c for c in widgets[0].classes if c.startswith("after-")))
        self.parts: list[tuple[str, tuple[int, ...], bool, bool]] = []  # (source, widths, continued, gap before)
        self._drawn: list[tuple[int, list[Strip]]] = []  # (width drawn at, lines) per part
        for index, widget in enumerate(widgets):
            if isinstance(widget, FrozenSegments):  # merged ones merge again: few widgets at any length
                gap = index > 0 and widget.has_class("after-block")
                self.parts += [(p[0], p[1], p[2], p[3] or (i == 0 and gap)) for i, p in enumerate(widget.parts)]
                self._drawn += widget._drawn
            else:
                self.parts.append((widget.source, widget.table_widths, widget.table_continued,
                                   index > 0 and widget.has_class("after-block")))
                self._drawn.append((widget.drawn_width, widget._lines))
        self._lines: list[Strip] = []
        self._width = -1

    def _draw(self, width: int) -> list[Strip]:
        if width != self._width:
            self._width, lines = width, []
            for index, (source, widths, continued, gap) in enumerate(self.parts):
                drawn_width, part_lines = self._drawn[index]
                if drawn_width != width:  # only after a resize: draw the part again
                    part_lines = _draw_markdown(self, source, width, widths, continued)
                    self._drawn[index] = (width, part_lines)
                if gap:
                    lines.append(Strip.blank(width, self.rich_style))
                lines.extend(part_lines)
            self._lines = lines
        return self._lines



def _trimmed(rows: list[list[RichSegment]], base: Style) -> list[list[RichSegment]]:
    """Without the blank rows Rich puts before a list or after the last block: the space between segments
    is the widget's (a margin where a new block starts, none where a list or code block goes on)."""

    def blank(row: list[RichSegment]) -> bool:
        return all(not seg.text.strip() and (seg.style is None or seg.style.bgcolor == base.bgcolor) for seg in row)

    start, end = 0, len(rows)
    while start < end and blank(rows[start]):
        start += 1
    while end > start and blank(rows[end - 1]):
        end -= 1
    return rows[start:end]


# Text given to the segments per frame: when much arrives at once (a burst from a fast engine, thinking opened
# after 30,000 tokens, a long stored answer) it is drawn over several frames, never in one long one.
FRAME_CHARS = 2000
MERGE_EVERY = 32


class StreamingMarkdown(Vertical):
    DEFAULT_CSS = """
    StreamingMarkdown { height: auto; layout: stream; }  /* stream: placements of unchanged segments are kept */
    StreamingMarkdown > Segment, StreamingMarkdown > FrozenSegments { height: auto; }
    /* a segment that starts a new block is apart from the one above it, as blocks are; a continued list or
       code block is not */
    StreamingMarkdown > .after-block { margin-top: 1; }
    """

    def __init__(self, text: str = "", classes: str = "") -> None:
        """`text`: a whole text (a stored answer); else it streams in with `append` until `finish`."""
        super().__init__(classes=classes)
        self._segmenter = Segmenter()
        self._pending = printable(text)  # text not yet given to the segments
        self._complete = bool(text)  # no more text will come
        self._pumping = False
        self._live: Segment | None = None

    def compose(self) -> ComposeResult:
        """The first part of the text given at construction; the rest follows frame by frame (_pump)."""
        self._live = Segment("")
        for op in self._take():
            if isinstance(op, Append):
                self._live.source += op.text
            else:
                yield self._cut(op)
        yield self._live

    def on_mount(self) -> None:
        if self._pending:
            self.call_after_refresh(self._pump)

    @property
    def settled(self) -> bool:
        """Everything given so far is in the segments."""
        return not self._pending

    def drawn_lines(self) -> list[Strip]:
        """Every line as last drawn, in order (for tests and benchmarks)."""
        out: list[Strip] = []
        for child in self.children:
            if isinstance(child, Segment | FrozenSegments):
                if child.has_class("after-block") and out:
                    out.append(Strip.blank(0))  # the margin
                out.extend(child._lines)
        return out

    async def append(self, text: str) -> None:
        if text:
            self._pending += printable(text)  # small: what arrived since the last frame
            await self._pump()

    async def finish(self) -> None:
        """No more text: the held-back rest of the last line goes in too."""
        self._complete = True
        await self._pump()

    async def _pump(self) -> None:
        """Give the segments at most FRAME_CHARS of the pending text; the rest after the next refresh."""
        if self._pumping or self._live is None:
            return
        self._pumping = True
        try:
            await self._apply(self._take())
        finally:
            self._pumping = False
        if self._pending:
            self.call_after_refresh(self._pump)

    def _take(self) -> list[Op]:
        chunk, self._pending = self._pending[:FRAME_CHARS], self._pending[FRAME_CHARS:]
        ops = self._segmenter.feed(chunk) if chunk else []
        if self._complete and not self._pending:
            ops += self._segmenter.finish()
        return ops

    async def _apply(self, ops: list[Op]) -> None:
        for op in ops:
            assert self._live is not None
            if isinstance(op, Append):
                self._live.append(op.text)
            else:
                self._cut(op)
                await self.mount(self._live)
                await self._merge_frozen()

    async def _merge_frozen(self) -> None:
        """Every MERGE_EVERY frozen segments become one widget, so a long answer keeps few widgets."""
        frozen = [child for child in self.children if isinstance(child, Segment) and child is not self._live]
        if len(frozen) < MERGE_EVERY or any(s.drawn_width < 0 for s in frozen):
            return  # not all drawn yet (merging reuses their lines): at the next cut
        merged = FrozenSegments(frozen)
        await self.mount(merged, before=frozen[0])
        await self.remove_children(frozen)
        blocks = [child for child in self.children if isinstance(child, FrozenSegments)]
        if len(blocks) >= MERGE_EVERY and all(block._width >= 0 for block in blocks):
            await self.mount(FrozenSegments(blocks), before=blocks[0])
            await self.remove_children(blocks)

    def _cut(self, op: Cut) -> Segment:
        """Freeze the live segment (returned) and start a new one after it."""
        frozen = self._live
        assert frozen is not None
        frozen.source += op.close
        if op.kind == "table":
            frozen.table_widths = op.widths  # the first part of a table too: all parts line up
        frozen.refresh(layout=True)
        self._live = Segment(op.reopen, classes=f"after-{op.kind}", table_widths=op.widths,
                             table_continued=op.kind == "table")
        return frozen
