"""F3 names, under the table, the draft model speculative decoding would use beside the highlighted catalog quant
(planning/draft_choice.py): the file on disk, else the catalog quant to download (named as its row shows it, with
its size), else why none (issue 22)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from textual.widgets import DataTable, Label

from qwen_chat.catalog.loader import load_models
from qwen_chat.planning.draft_choice import DraftChoice, DraftOption, draft_for_catalog
from qwen_chat.planning.plan_inputs import arch_from_catalog, candidates_from_catalog, weights_from_catalog
from qwen_chat.planning.planner import GiB, Plan, plan
from qwen_chat.system.hardware import Device, Machine
from qwen_chat.tui import models_screen
from qwen_chat.tui.models_screen import ModelsScreen, draft_line

from fake_engine import FakeEngine
from helpers import make_app, screen_text, wait_for

MODELS = load_models()


def machine(ram: float, gpu: float = 0) -> Machine:
    devices = (Device("GPU0", "NVIDIA RTX", "gpu", int(gpu * GiB), int(gpu * GiB), "nvidia"),) if gpu else ()
    return Machine(int(ram * GiB), int(ram * GiB), 8, 16, devices, bool(devices))


@pytest.fixture(autouse=True)
def empty_models_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No model downloaded: a draft can only be offered."""
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv("QWEN_CHAT_MODELS_DIR", str(folder))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # this machine's own cache stays out of F3
    return folder


def line_for(model_id: str, box: Machine, quant: str | None = None) -> tuple[Plan, str]:
    model = MODELS[model_id]
    chosen = plan(arch_from_catalog(model), candidates_from_catalog(model, model.quants[quant] if quant else None),
                  box)
    return chosen, draft_line(model, chosen, draft_for_catalog(model, chosen, box, MODELS))


# ---- the sentence ------------------------------------------------------------------------------------------


def test_the_line_names_the_download_that_would_fit_as_its_row_shows_it() -> None:
    _, line = line_for("qwen3-8b", machine(64, 24))
    assert line == ("Draft for speculative decoding: none usable on disk; qwen3-0.6b Q8_0 (0.6 GB) would fit beside "
                    "it: select its row and press Enter to download it")


def test_the_line_names_a_draft_on_disk_and_where_it_runs() -> None:
    small, model = MODELS["qwen3-0.6b"], MODELS["qwen3-8b"]
    chosen = plan(arch_from_catalog(model), candidates_from_catalog(model), machine(64, 24))
    option = DraftOption("Qwen3-0.6B-Q8_0.gguf", small.params, 639_446_688, arch_from_catalog(small),
                         weights_from_catalog(small, small.quants["Q8_0"]))
    on_gpu = DraftChoice(option, "same vocabulary, fits beside the model", chosen.n_ctx, on_gpu=True)
    assert draft_line(model, chosen, on_gpu) == ("Draft for speculative decoding: Qwen3-0.6B-Q8_0.gguf (on disk, "
                                                 "0.6 GB) on the GPU")
    shorter = dataclasses.replace(on_gpu, n_ctx=4096, on_gpu=False)
    assert draft_line(model, chosen, shorter).endswith(
        "0.6 GB) on the CPU, drafting while the conversation is under 4,096 tokens")


@pytest.mark.parametrize(("model_id", "box", "said"), [
    ("qwen3-1.7b", machine(64, 24), "none, a draft model pays for models of 4B and up (Qwen3-1.7B has 1.7B)"),
    ("qwen3.5-9b", machine(64, 24), "none, Qwen3.5-9B is a hybrid recurrent model: llama-cpp-python 0.3.36 cannot "
                                    "roll its state back after a rejected draft"),
    ("qwen3-32b", machine(32, 12), "none: the model already fills the GPU (runs partly on GPU): a draft model would "
                                   "take memory its layers need"),
])
def test_the_line_says_why_there_is_none(model_id: str, box: Machine, said: str) -> None:
    _, line = line_for(model_id, box)
    assert line == f"Draft for speculative decoding: {said}"


def test_a_long_reason_is_cut_to_two_lines_and_points_at_plan() -> None:
    model = MODELS["qwen3-8b"]
    chosen = plan(arch_from_catalog(model), candidates_from_catalog(model), machine(64, 24))
    line = draft_line(model, chosen, DraftChoice(None, "Qwen3-0.6B-Q8_0.gguf needs at least 1.2 GiB " * 8))
    assert len(line) <= 170  # two lines of the dialog
    assert line.endswith(f"… (qwen-chat plan qwen3-8b:{chosen.quant} says more)")


# ---- on the screen -----------------------------------------------------------------------------------------


async def test_f3_shows_the_draft_of_the_highlighted_quant(tiny_models: dict[str, Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models_screen, "detect", lambda: machine(64, 24))  # 64 GB of RAM and a 24 GB card
    app = make_app(tmp_path / "chat.db", tiny_models["hybrid"], engine=FakeEngine.scripted([]))
    async with app.run_test(size=(130, 40)) as pilot:
        await pilot.press("f3")
        table = await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen)
                               and app.screen.query_one(DataTable).row_count > 40 and app.screen.query_one(DataTable),
                               what="the catalog rows")
        label = app.screen.query_one("#draft-line", Label)

        async def highlight(key: str, part: str) -> str:
            table.move_cursor(row=table.get_row_index(key))
            return await wait_for(pilot, lambda: part in str(label.content) and str(label.content),
                                  what=f"the draft line of {key} saying {part!r}")

        line = await highlight("qwen3-8b:Q4_K_M", "would fit beside it")
        offered = [str(cell) for cell in table.get_row("qwen3-0.6b:Q8_0")]
        assert f"none usable on disk; {offered[1]} {offered[2]} ({offered[3]}) would fit" in line  # findable
        await wait_for(pilot, lambda: "select its row and press Enter" in screen_text(app), what="the line drawn")
        await highlight("qwen3-1.7b:Q8_0", "4B and up")
        await highlight("qwen3.5-9b:Q4_K_M", "is a hybrid recurrent model")
        too_big = [str(cell) for cell in table.get_row("qwen3-235b-a22b:Q8_0")]
        assert too_big[4] == "too big"  # no plan, no draft: the line is empty
        table.move_cursor(row=table.get_row_index("qwen3-235b-a22b:Q8_0"))
        await wait_for(pilot, lambda: str(label.content) == "", what="the line emptied")
