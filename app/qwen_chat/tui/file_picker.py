"""Ctrl+O: pick a file to attach to the next message, by typing its path or choosing it in a folder tree.

The screen only chooses the path; attaching it (the size, binary and context checks, the chip) is `/file PATH`'s
own code (AttachmentBar.attach), so both ways say the same things, and refuse the same files (devices, FIFOs,
sockets: session/attachments.py never opens them for reading in a way that waits, nor reads them).
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text, TextType
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DirectoryTree, Input, Label

from qwen_chat.tui.printable import printable_line

HINT = "Attach a file: type its path (Enter) or pick it below (Tab) · Esc closes"


class PrintableTree(DirectoryTree):
    """A folder tree that draws every name as the plain text it is: a file name may hold any byte but / and NUL,
    so ESC ] 0 ; title BEL in one would retitle the terminal, and a newline would hide the rest of the name."""

    def process_label(self, label: TextType) -> Text:
        if isinstance(label, Text):
            return Text(printable_line(label.plain), style=label.style)
        return Text(printable_line(label))  # Text, never markup: "[bold]x.md" is a name, not a style


class FilePicker(ModalScreen[Path | None]):
    # the dialog's frame is the models screen's; the tree takes the height the frame has left
    DEFAULT_CSS = "FilePicker #file-tree { height: 1fr; margin-top: 1; }"
    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, start: Path) -> None:
        super().__init__()
        self._start = start

    def compose(self) -> ComposeResult:
        with Vertical(classes="models-dialog"):
            yield Label(HINT, markup=False)
            yield Input(placeholder="a path, e.g. notes.md or ~/src/main.py", id="file-path")
            yield PrintableTree(self._start, id="file-tree")

    @on(Input.Submitted, "#file-path")
    def _typed(self, event: Input.Submitted) -> None:
        typed = event.value.strip().strip("'\"")  # a path pasted from a shell often comes quoted, as with /file
        if not typed:
            return
        path = Path(typed).expanduser()
        if path.is_dir():  # a folder cannot be attached: the tree shows it, to pick a file in it
            self.query_one("#file-tree", DirectoryTree).path = path.resolve()
            event.input.value = ""
            return
        self.dismiss(path)  # relative paths are read from the working folder, as /file reads them

    @on(DirectoryTree.FileSelected, "#file-tree")
    def _picked(self, event: DirectoryTree.FileSelected) -> None:
        self.dismiss(event.path)
