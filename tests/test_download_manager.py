"""The download manager: queue, pause/resume across the partial file, cancel, and the TUI screens."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from textual.widgets import DataTable

from qwen_chat.hub.download_queue import DownloadQueue, Job

from helpers import make_app, status, wait_for, wait_until, write_catalog

REPO = "test-org/Tiny-GGUF"


@pytest.fixture
def served(hub, tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data = tiny_models["hybrid"].read_bytes()
    hub.add_repo(REPO, {"tiny-test-F32.gguf": data})
    write_catalog("tiny-test", REPO, {"F32": [("tiny-test-F32.gguf", len(data))]}, name="Tiny test model")
    models = tmp_path / "models"
    monkeypatch.setenv("QWEN_CHAT_MODELS_DIR", str(models))
    return hub, data, models


def test_pause_resume_and_cancel(served) -> None:
    server, data, models = served
    server.fault(REPO, "tiny-test-F32.gguf", delay=0.05, chunk_size=4096)  # slow link: about 80 kB/s
    seen: list[Job] = []
    lock = threading.Lock()

    def listen(job: Job) -> None:
        with lock:
            seen.append(job)

    queue = DownloadQueue(listen)
    try:
        job = queue.add("tiny-test:F32")
        wait_until(lambda: queue.jobs()[0].done > 20_000, what="20 kB downloaded")
        queue.pause(job.id)
        wait_until(lambda: queue.jobs()[0].state == "paused", what="paused")
        partial = models / ".tiny-test-F32.gguf.partial"
        wait_until(lambda: partial.is_file() and partial.stat().st_size > 0, what="the partial file")
        kept = partial.stat().st_size
        downloading = [j for j in seen if j.state == "downloading" and j.total]
        assert downloading and downloading[-1].speed > 0 and downloading[-1].eta_seconds is not None
        assert downloading[-1].file_total == len(data) and 0 < downloading[-1].file_done <= len(data)
        assert downloading[-1].file_eta_seconds is not None
        server.clear_faults()
        server.reset_counts()
        queue.resume(job.id)
        wait_until(lambda: queue.jobs()[0].state == "done", what="done")
        assert (models / "tiny-test-F32.gguf").read_bytes() == data
        assert server.bytes_served("tiny-test-F32.gguf") <= len(data) - kept + (10 << 20)
        assert not partial.exists()

        # cancel deletes the partial
        (models / "tiny-test-F32.gguf").unlink()
        (models / ".verified.json").unlink(missing_ok=True)
        server.fault(REPO, "tiny-test-F32.gguf", delay=0.05, chunk_size=4096)
        again = queue.add("tiny-test:F32")
        wait_until(lambda: queue.jobs()[-1].done > 10_000, what="10 kB downloaded again")
        queue.cancel(again.id)
        wait_until(lambda: queue.jobs()[-1].state == "cancelled", what="cancelled")
        wait_until(lambda: not partial.exists(), what="the partial file deleted")
    finally:
        queue.close()


def test_failure_is_reported_with_the_reason(served) -> None:
    server, _, _ = served
    server.fault(REPO, "tiny-test-F32.gguf", status=403)
    queue = DownloadQueue(lambda job: None)
    try:
        queue.add("tiny-test:F32")
        wait_until(lambda: queue.jobs()[0].state == "failed", what="failed")
        assert "gated or private" in queue.jobs()[0].message
    finally:
        queue.close()


async def test_models_screen_downloads_then_loads(served, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    server, data, models = served
    app = make_app(tmp_path / "chat.db", tiny_models["thinking"], n_ctx=512)
    async with app.run_test(size=(130, 40)) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="load")
        await pilot.press("f3")
        await wait_for(pilot, lambda: bool(app.screen.query(DataTable)) and
                       "tiny-test:F32" in [str(k.value) for k in app.screen.query_one(DataTable).rows],
                       what="catalog rows")
        table = app.screen.query_one(DataTable)
        table.move_cursor(row=table.get_row_index("tiny-test:F32"))
        await pilot.press("enter")  # not downloaded: queue it
        await wait_for(pilot, lambda: app.downloads.jobs() and app.downloads.jobs()[0].state == "done",
                       what="download")
        await pilot.press("escape")
        await pilot.press("f4")
        await wait_for(pilot, lambda: bool(app.screen.query("#downloads-table")), what="downloads screen")
        await wait_for(pilot, lambda: app.screen.query_one("#downloads-table", DataTable).row_count == 1,
                       what="the download's row")
        row = app.screen.query_one("#downloads-table", DataTable).get_row("1")
        assert str(row[0]) == "tiny-test:F32" and str(row[1]) == "done"
        await pilot.press("escape")
        await pilot.press("f3")
        await wait_for(pilot, lambda: bool(app.screen.query(DataTable)) and
                       "tiny-test:F32" in [str(k.value) for k in app.screen.query_one(DataTable).rows],
                       what="catalog rows again")
        table = app.screen.query_one(DataTable)
        assert str(table.get_row("tiny-test:F32")[0]).endswith("✓")
        table.move_cursor(row=table.get_row_index("tiny-test:F32"))
        await pilot.press("enter")  # downloaded: load it
        await wait_for(pilot, lambda: "tiny-test-F32.gguf" in status(app) and "ready" in status(app),
                       what="loaded the download")
