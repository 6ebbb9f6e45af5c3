"""The download manager: queue, pause/resume across the partial file, cancel, and the TUI screens."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable

from hub_server import hub  # noqa: F401  (fixture)
from qwen_chat.models.download_queue import DownloadQueue, Job

REPO = "test-org/Tiny-GGUF"


def catalog(name: str, size: int) -> str:
    return f"""schema: 1
models:
  tiny-test:
    name: Tiny test model
    repo: {REPO}
    variant: hybrid
    params: 1000000
    layers: 2
    hidden: 64
    heads: 4
    kv_heads: 2
    head_dim: 16
    experts: 0
    experts_used: 0
    native_context: 32768
    gguf_context: 40960
    yarn_factors: []
    quants:
      F32:
        estimated: false
        files:
          - {{path: {name}, size: {size}}}
"""


@pytest.fixture
def served(hub, tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: F811
    data = tiny_models["hybrid"].read_bytes()
    hub.add_repo(REPO, {"tiny-test-F32.gguf": data})
    config = Path(os.environ["QWEN_CHAT_CONFIG_DIR"])
    config.mkdir(parents=True, exist_ok=True)
    (config / "models_catalog.yaml").write_text(catalog("tiny-test-F32.gguf", len(data)))
    models = tmp_path / "models"
    monkeypatch.setenv("QWEN_CHAT_MODELS_DIR", str(models))
    return hub, data, models


def wait(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


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
        wait(lambda: queue.jobs()[0].done > 20_000)
        queue.pause(job.id)
        wait(lambda: queue.jobs()[0].state == "paused")
        partial = models / ".tiny-test-F32.gguf.partial"
        wait(lambda: partial.is_file() and partial.stat().st_size > 0)
        kept = partial.stat().st_size
        downloading = [j for j in seen if j.state == "downloading" and j.total]
        assert downloading and downloading[-1].speed > 0 and downloading[-1].eta_seconds is not None
        assert downloading[-1].file_total == len(data) and 0 < downloading[-1].file_done <= len(data)
        assert downloading[-1].file_eta_seconds is not None
        server.clear_faults()
        server.reset_counts()
        queue.resume(job.id)
        wait(lambda: queue.jobs()[0].state == "done")
        assert (models / "tiny-test-F32.gguf").read_bytes() == data
        assert server.bytes_served("tiny-test-F32.gguf") <= len(data) - kept + (10 << 20)
        assert not partial.exists()

        # cancel deletes the partial
        (models / "tiny-test-F32.gguf").unlink()
        (models / ".verified.json").unlink(missing_ok=True)
        server.fault(REPO, "tiny-test-F32.gguf", delay=0.05, chunk_size=4096)
        again = queue.add("tiny-test:F32")
        wait(lambda: queue.jobs()[-1].done > 10_000)
        queue.cancel(again.id)
        wait(lambda: queue.jobs()[-1].state == "cancelled")
        wait(lambda: not partial.exists())
    finally:
        queue.close()


def test_failure_is_reported_with_the_reason(served) -> None:
    server, _, _ = served
    server.fault(REPO, "tiny-test-F32.gguf", status=403)
    queue = DownloadQueue(lambda job: None)
    try:
        queue.add("tiny-test:F32")
        wait(lambda: queue.jobs()[0].state == "failed")
        assert "gated or private" in queue.jobs()[0].message
    finally:
        queue.close()


async def test_models_screen_downloads_then_loads(served, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from test_tui import make_app, status, wait_for

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
        await pilot.pause(0.3)
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
