"""The planner's draft model (planning/draft_choice.py): which one, where, or why none; the vocabulary check
(gguf/vocab.py) on real GGUF headers; the choice carried into the load request and loaded by the engine; and
`[engine] threads` / `--threads` reaching llama.cpp."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import llama_cpp.llama_cpp as C  # noqa: N812
import pytest

from qwen_chat.catalog.loader import load_models
from qwen_chat.cli.parser import parse
from qwen_chat.cli.reports import print_doctor, print_plan
from qwen_chat.engines.draft_model import DraftModel
from qwen_chat.gguf.files import read_model_info
from qwen_chat.planning import draft_choice
from qwen_chat.planning.draft_choice import (
    choose_draft,
    draft_for_catalog,
    local_options,
    target_from_info,
)
from qwen_chat.planning.plan_inputs import (
    arch_from_catalog,
    arch_from_info,
    candidate_from_info,
    candidates_from_catalog,
)
from qwen_chat.planning.planner import GiB, plan
from qwen_chat.session.model_loading import prepare_load, with_fewer_layers
from qwen_chat.system.hardware import Device, Machine
from qwen_chat.system.paths import models_dir

import tiny_models
from helpers import loaded_engine, write_settings
from tiny_models import write_tiny_hybrid, write_tiny_qwen3

MODELS = load_models()


def machine(ram: float, gpu: float = 0, available: float | None = None) -> Machine:
    devices = (Device("GPU0", "NVIDIA RTX", "gpu", int(gpu * GiB), int(gpu * GiB), "nvidia"),) if gpu else ()
    return Machine(int(ram * GiB), int((available or ram) * GiB), 8, 16, devices, bool(devices))


def catalog_draft(model_id: str, box: Machine):
    model = MODELS[model_id]
    chosen = plan(arch_from_catalog(model), candidates_from_catalog(model), box)
    return chosen, draft_for_catalog(model, chosen, box, MODELS)


# ---- catalog models ---------------------------------------------------------------------------------------


def test_a_qwen3_model_is_offered_the_draft_of_its_size() -> None:
    _, eight = catalog_draft("qwen3-8b", machine(64, 24))
    assert eight.option is None and eight.offer is not None
    assert eight.offer.ref == "qwen3-0.6b:Q8_0"
    assert "qwen-chat pull qwen3-0.6b:Q8_0" in eight.reason and "0.64 GB" in eight.reason
    _, big = catalog_draft("qwen3-32b", machine(128, 80))
    assert big.offer is not None and big.offer.ref == "qwen3-1.7b:Q8_0"  # a sixth of 32B: 1.7B pays
    _, moe = catalog_draft("qwen3-30b-a3b", machine(128, 80))
    assert moe.offer is not None and moe.offer.ref == "qwen3-0.6b:Q8_0"  # 3.3B active: the small one


@pytest.mark.parametrize("model_id", ["qwen3.5-27b", "qwen3.6-35b-a3b", "qwen3-next-80b-a3b-instruct"])
def test_hybrid_recurrent_models_get_no_draft(model_id: str) -> None:
    _, choice = catalog_draft(model_id, machine(256, 141))
    assert choice.option is None and choice.offer is None
    assert "hybrid recurrent" in choice.reason and "cannot roll its recurrent state back" in choice.reason


def test_small_models_and_models_that_fill_the_gpu_get_none() -> None:
    _, small = catalog_draft("qwen3-1.7b", machine(64, 24))
    assert small.option is None and "4B and up" in small.reason
    partial, spilled = catalog_draft("qwen3-32b", machine(32, 12))
    assert partial.mode == "partial"
    assert spilled.option is None and "already fills the GPU" in spilled.reason
    _, tight = catalog_draft("qwen3-30b-a3b", machine(23.5, available=21))  # 18.6 GB of weights: no room left
    assert tight.offer is None and "needs at least" in tight.reason and "of RAM is left" in tight.reason


# ---- files on disk ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny target and tiny drafts: one of the same vocabulary, one whose token 256 says something else, one
    with a token more, and a hybrid."""
    folder = tmp_path_factory.mktemp("draft-files")
    made = {"target": write_tiny_qwen3(folder / "target.gguf", layers=8, seed=1),
            "same": write_tiny_qwen3(folder / "same.gguf", layers=1, seed=2),
            "hybrid": write_tiny_hybrid(folder / "hybrid.gguf", "qwen35")}
    patch = pytest.MonkeyPatch()
    try:
        patch.setattr(tiny_models, "TOKENS", [*tiny_models.TOKENS[:256], "Ġa", *tiny_models.TOKENS[257:]])
        made["swapped"] = write_tiny_qwen3(folder / "swapped.gguf", layers=1, seed=3)
        patch.setattr(tiny_models, "TOKENS", [*tiny_models.TOKENS, "<extra>"])
        made["longer"] = write_tiny_qwen3(folder / "longer.gguf", layers=1, seed=4)
    finally:
        patch.undo()
    return made


def big(path: Path) -> draft_choice.DraftTarget:
    """The tiny target as the 8B model it stands for: only its parameter count is made up."""
    return dataclasses.replace(target_from_info(read_model_info(path)), params=8_000_000_000,
                               active_params=8_000_000_000, size=0)


def put_in_models_folder(*paths: Path) -> Path:
    folder = models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def tiny_plan(path: Path, box: Machine):
    info = read_model_info(path)
    return plan(arch_from_info(info), [candidate_from_info(info)], box, 4096)


def test_a_draft_of_the_same_vocabulary_is_chosen_and_counted_where_the_model_runs(files: dict[str, Path]) -> None:
    folder = put_in_models_folder(files["same"])
    target = big(files["target"])
    for box, on_gpu in ((machine(32, 24), True), (machine(32), False)):
        chosen = tiny_plan(files["target"], box)
        choice = choose_draft(target, chosen, box, local_options(target, folder))
        assert choice.option is not None and choice.option.path == folder / "same.gguf", choice.reason
        assert choice.on_gpu is on_gpu and choice.n_ctx == chosen.n_ctx == 4096
        assert (choice.gpu_bytes > 0) is on_gpu and choice.ram_bytes > 0
        assert "same vocabulary" in choice.describe() and "same.gguf" in choice.describe()


@pytest.mark.parametrize(("draft", "said"), [
    ("swapped", "another vocabulary of the same size (token 256 is 'Ġa'; in the model it is 'Ġt')"),
    ("longer", "another vocabulary (263 tokens; the model has 262)"),
])
def test_a_draft_with_another_vocabulary_is_refused_with_the_reason(files: dict[str, Path], draft: str,
                                                                     said: str) -> None:
    folder = put_in_models_folder(files[draft])
    box = machine(32, 24)
    target = big(files["target"])
    choice = choose_draft(target, tiny_plan(files["target"], box), box, local_options(target, folder))
    assert choice.option is None
    assert f"{draft}.gguf has {said}" in choice.reason


def test_a_hybrid_file_gets_no_draft_and_is_never_one(files: dict[str, Path]) -> None:
    folder = put_in_models_folder(files["same"], files["hybrid"])
    box = machine(32, 24)
    hybrid = dataclasses.replace(target_from_info(read_model_info(files["hybrid"])), params=9_000_000_000)
    assert "hybrid recurrent" in choose_draft(hybrid, tiny_plan(files["hybrid"], box), box, ()).reason
    names = [o.name for o in local_options(big(files["target"]), folder)]
    assert names == ["same.gguf"]  # the hybrid is not offered as a draft either


# ---- into the load request, the engine and llama.cpp --------------------------------------------------------


@pytest.fixture
def any_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny files stand for a model of 4B and up and its small draft."""
    monkeypatch.setattr(draft_choice, "MIN_TARGET_PARAMS", 0)
    monkeypatch.setattr(draft_choice, "IDEAL_SHARE", 1.0)
    monkeypatch.setattr(draft_choice, "MAX_SHARE", 1.0)


def test_the_engine_loads_the_draft_with_the_threads_of_the_settings(files: dict[str, Path], any_size: None) -> None:
    put_in_models_folder(files["same"])
    write_settings("[engine]\nthreads = 1\n")
    prepared = prepare_load(files["target"], 1024, machine(32))
    request = prepared.request
    assert request.draft is not None and request.draft.model_path == models_dir() / "same.gguf", prepared.draft
    assert (request.n_threads, request.n_threads_batch) == (1, 1)
    with loaded_engine(request) as (engine, _recorder, _events):
        loaded = engine._model
        assert loaded is not None and isinstance(loaded.draft, DraftModel)
        for ctx in (loaded.llm._ctx.ctx, loaded.draft._ctx):
            assert (C.llama_n_threads(ctx), C.llama_n_threads_batch(ctx)) == (1, 1)
        assert loaded.draft.propose([1, 2, 3], 2) is not None


def test_a_gpu_draft_is_planned_and_dropped_by_a_retry_with_fewer_layers(files: dict[str, Path],
                                                                         any_size: None) -> None:
    put_in_models_folder(files["same"])
    prepared = prepare_load(files["target"], 1024, machine(32, 24))
    assert prepared.draft is not None and prepared.draft.on_gpu
    draft = prepared.request.draft
    assert draft is not None and (draft.n_gpu_layers, draft.n_ctx, draft.flash_attn) == (-1, 1024, True)
    fewer = with_fewer_layers(prepared.request, prepared.info)
    assert fewer is not None and fewer.draft is None  # the memory it lacked is the draft's


def test_threads_from_the_command_line_win(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    write_settings("[engine]\nthreads = 1\n")
    assert prepare_load(files["target"], 1024, machine(32)).request.n_threads == 1
    assert parse(["ask", "--threads", "3", "q"]).threads == 3
    monkeypatch.setenv("QWEN_CHAT_THREADS", "3")  # what main does with --threads
    assert prepare_load(files["target"], 1024, machine(32)).request.n_threads_batch == 3
    print_doctor(machine(32))
    assert print_plan(str(files["target"]), 1024, machine(32)) == 0
    out = capsys.readouterr().out
    assert "llama.cpp threads: 3 (--threads)" in out and "threads: 3 (--threads)" in out
    assert "draft model: none: " in out and "4B and up" in out  # the tiny target is too small for one


@pytest.mark.parametrize("argv", [["--threads", "0"], ["--threads", "x"], ["models", "--threads", "2"],
                                  ["--endpoint", "http://h/v1", "--threads", "2"]])
def test_bad_threads_are_refused_by_the_parser(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    assert exit_.value.code == 2
    assert "--threads" in capsys.readouterr().err


def test_bad_thread_settings_are_reported_and_the_cores_used() -> None:
    from qwen_chat.config.check import check
    from qwen_chat.config.engine_settings import threads

    write_settings("[engine]\nthreads = -2\nspeed = 1\n")
    problems = check()
    assert any("engine.threads: must be a whole number of threads from 1" in p for p in problems), problems
    assert any("engine.speed: unknown setting" in p for p in problems), problems
    assert threads().source.startswith(("the physical cores", "the logical cores"))
