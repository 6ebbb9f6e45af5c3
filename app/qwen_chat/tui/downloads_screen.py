"""The download manager: every queued model with bytes, speed and ETA; pause, resume and cancel."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Label

from qwen_chat.hub.download_queue import DownloadQueue, Job
from qwen_chat.hub.downloads import human
from qwen_chat.tui.printable import printable_line

_STYLE = {"done": "green", "failed": "red", "paused": "yellow", "cancelled": "dim", "downloading": "cyan"}


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"


def _eta(job: Job) -> str:
    if job.state != "downloading":
        return ""
    return f"file {_clock(job.file_eta_seconds)} · all {_clock(job.eta_seconds)}"


class DownloadsScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close"),
        Binding("p", "pause_resume", "Pause/resume"),
        Binding("x", "cancel_job", "Cancel"),
    ]

    def __init__(self, queue: DownloadQueue) -> None:
        super().__init__()
        self.queue = queue

    def compose(self) -> ComposeResult:
        with Vertical(classes="models-dialog"):
            yield Label("Downloads · p pause/resume · x cancel · Esc closes (they go on)", markup=False)
            yield DataTable(id="downloads-table", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("model", "state", "file", "progress", "speed", "ETA", "note")
        for job in self.queue.jobs():
            self.show(job)

    def show(self, job: Job) -> None:
        table = self.query_one(DataTable)
        percent = f"{job.done / job.total:.0%}" if job.total else ""
        file_part = f"file {human(job.file_done)} / {human(job.file_total)} · " if job.file_total else ""
        # file names and messages come from the hub or the disk (an error quoting a path): drawn, never sent
        cells = [Text(printable_line(job.ref)), Text(job.state, style=_STYLE.get(job.state, "")),
                 Text(printable_line(job.file)),
                 Text(f"{file_part}all {human(job.done)} / {human(job.total)} {percent}" if job.total else ""),
                 Text(f"{human(job.speed)}/s" if job.speed else ""), Text(_eta(job)),
                 Text(printable_line(job.message[:80]))]
        key = str(job.id)
        if key in table.rows:
            for column, cell in zip(table.columns, cells, strict=True):
                table.update_cell(key, column, cell)
        else:
            table.add_row(*cells, key=key)

    def _selected(self) -> Job | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((j for j in self.queue.jobs() if str(j.id) == key), None)

    def action_pause_resume(self) -> None:
        job = self._selected()
        if job is None:
            return
        if job.state in ("paused", "failed"):
            self.queue.resume(job.id)
        elif job.state in ("queued", "downloading"):
            self.queue.pause(job.id)

    def action_cancel_job(self) -> None:
        job = self._selected()
        if job is not None:
            self.queue.cancel(job.id)
