"""Ctrl+O: pick a file to attach to the next message, by typing its path or choosing it in a folder tree.

The screen only chooses the path; attaching it (the size, binary and context checks, the chip) is `/file PATH`'s
own code (AttachmentBar.attach), so both ways say the same things.
"""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DirectoryTree, Input, Label

HINT = "Attach a file: type its path and press Enter, or pick it below (Tab). Esc closes."


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
            yield DirectoryTree(self._start, id="file-tree")

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
