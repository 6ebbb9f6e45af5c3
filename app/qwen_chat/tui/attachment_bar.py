"""The files attached to the message being written (/file PATH), shown as chips above the composer.

A file is read in a worker thread, never on the UI thread: even a slow disk or a network share cannot freeze the
app (devices and FIFOs are refused before anything is read, see session/attachments.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rich.text import Text
from textual.widgets import Static

from qwen_chat.session.attachments import AttachmentError, read_attachment
from qwen_chat.store.records import Attachment
from qwen_chat.tui.messages import file_chips

USAGE = "/file PATH attaches a text file to your next message; /file clear removes the attached files."


class AttachmentBar(Static):
    def __init__(self) -> None:
        super().__init__("", id="attachments", markup=False)
        self.files: list[Attachment] = []
        self.display = False

    def set_files(self, files: list[Attachment]) -> None:
        self.files = files
        self.display = bool(files)
        self.update(Text(file_chips(files) + "   (/file clear removes them)") if files else "")

    async def command(self, argument: str, room: int | None) -> tuple[str, bool]:
        """Run `/file ARGUMENT`; returns (what to tell the user, whether it is an error). `room`: tokens the
        context has left (None: not known yet)."""
        if not argument:
            return (file_chips(self.files) if self.files else USAGE), False
        if argument == "clear":
            self.set_files([])
            return "The attached files were removed.", False
        return await self.attach(Path(argument.strip("'\"")), room)

    async def attach(self, path: Path, room: int | None) -> tuple[str, bool]:
        """Attach the file at `path`, as `/file PATH` does (Ctrl+O's picker too): what to tell the user, and
        whether it is an error. The file is read in a thread; the checks against the files already attached run
        back on the UI thread, after the read, so two attachments read at once are both counted."""
        try:
            file = await asyncio.to_thread(read_attachment, path)
        except AttachmentError as exc:
            return f"Not attached: {exc}.", True
        total = sum(f.tokens for f in self.files) + file.tokens
        if room is not None and total > room:
            return (f"Not attached: {file.name} is about {file.tokens:,} tokens and the context has room for "
                    f"{room:,} (F7 or /context for a larger one)."), True
        self.set_files([*self.files, file])
        return f"Attached {file.name} (about {file.tokens:,} tokens): it goes with your next message.", False
