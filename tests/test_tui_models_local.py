"""F3 lists the GGUF files on disk that are not in the catalog (hub/local_models.py) and opens one without a
restart, the conversation staying (issue 23); a file that cannot be opened says why instead."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from textual.widgets import DataTable

from qwen_chat.engines.protocol import LoadRequest
from qwen_chat.system.paths import models_dir
from qwen_chat.tui.messages import AssistantMessage
from qwen_chat.tui.models_screen import ModelsScreen

from fake_engine import FakeEngine, Reply
from helpers import SIZE, make_app, screen_text, status, type_and_send, wait_for


async def test_f3_opens_a_gguf_that_is_not_in_the_catalog(tiny_models: dict[str, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # this machine's own cache stays out of it
    folder = models_dir()
    (folder / "mine").mkdir(parents=True)
    local = shutil.copyfile(tiny_models["none"], folder / "mine" / "my-finetune-Q4_K_M.gguf")
    (folder / "half-00001-of-00002.gguf").write_bytes(tiny_models["none"].read_bytes())  # its shard 2 is gone
    engine = FakeEngine.scripted([Reply("From the first model."), Reply("From my finetune.")])
    app = make_app(tmp_path / "chat.db", tiny_models["hybrid"], engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="model load")
        await type_and_send(pilot, "hello")
        await wait_for(pilot, lambda: len(app.query(AssistantMessage)) == 1 and app.session.busy() is None,
                       what="the first answer")
        await pilot.press("f3")
        table = await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen)
                               and app.screen.query_one(DataTable).row_count > 40 and app.screen.query_one(DataTable),
                               what="the catalog and the local files")
        keys = [str(key.value) for key in table.rows]
        assert keys[-2:] == [f"local:{folder / 'half-00001-of-00002.gguf'}", f"local:{local}"]  # after the catalog
        table.move_cursor(row=len(keys) - 1)
        await wait_for(pilot, lambda: "my-finetune-Q4_K_M.gguf" in screen_text(app), what="the local rows drawn")
        shown = screen_text(app)
        assert "not in catalog" in shown and "incomplete split set" in shown
        table.move_cursor(row=len(keys) - 2)
        await pilot.press("enter")  # the incomplete set: said, and the screen stays
        await wait_for(pilot, lambda: any("shard 2 of 2 missing" in n.message for n in app._notifications),
                       what="why it cannot open")
        assert isinstance(app.screen, ModelsScreen)
        table.move_cursor(row=len(keys) - 1)
        await pilot.press("enter")
        await wait_for(pilot, lambda: "my-finetune-Q4_K_M.gguf" in status(app) and "ready" in status(app),
                       what="the local file loaded")
        assert not isinstance(app.screen, ModelsScreen)
        await type_and_send(pilot, "and now?")
        await wait_for(pilot, lambda: len(app.query(AssistantMessage)) == 2, what="an answer from it")
    loads = [r for r in engine.requests if isinstance(r, LoadRequest)]
    assert [r.model_path for r in loads] == [tiny_models["hybrid"], local]  # LocalModel(path), as for the catalog
