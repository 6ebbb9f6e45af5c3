"""The planner over simulated machines and every catalog model, and against llama.cpp's own numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_reports import llama_cpp_reported_sizes
from qwen_chat.catalog.loader import load_models
from qwen_chat.gguf.files import read_model_info
from qwen_chat.planning.plan_inputs import (
    arch_from_catalog,
    arch_from_info,
    candidate_from_info,
    candidates_from_catalog,
)
from qwen_chat.planning.planner import DoesNotFit, GiB, _full_gpu, budgets, compute_bytes, plan
from qwen_chat.system.hardware import Device, Machine


def machine(ram: float, available: float, gpus: tuple[float, ...] = (), apple: bool = False) -> Machine:
    devices = tuple(Device(f"GPU{i}", "Apple M3" if apple else "NVIDIA RTX", "gpu", int(g * GiB), int(g * GiB),
                           "apple" if apple else "nvidia", unified=apple) for i, g in enumerate(gpus))
    return Machine(int(ram * GiB), int(available * GiB), 8, 16, devices, bool(devices))


MACHINES = {
    "laptop-8gb-cpu": machine(8, 6.5),
    "apple-m-16gb": machine(16, 12, (10.7,), apple=True),
    "nvidia-12gb": machine(32, 28, (12,)),
    "nvidia-24gb": machine(64, 56, (24,)),
    "nvidia-2x24gb": machine(128, 110, (24, 24)),
    "workstation-64gb": machine(64, 56),
    "workstation-256gb": machine(256, 230),
}
MODELS = load_models()


def try_plan(model_id: str, machine_id: str, ctx: int | None = None):
    model = MODELS[model_id]
    try:
        return plan(arch_from_catalog(model), candidates_from_catalog(model), MACHINES[machine_id], ctx)
    except DoesNotFit:
        return None


@pytest.mark.parametrize("machine_id", MACHINES)
def test_plans_stay_within_budget_and_use_it(machine_id: str) -> None:
    box = MACHINES[machine_id]
    gpu_budget, ram_budget = budgets(box)
    for model_id, model in MODELS.items():
        chosen = try_plan(model_id, machine_id)
        if chosen is None:
            continue
        assert chosen.gpu_bytes <= gpu_budget, (model_id, chosen)
        assert chosen.ram_bytes + (chosen.gpu_bytes if box.unified_memory else 0) <= ram_budget, (model_id, chosen)
        if chosen.mode == "gpu":
            # uses most of it: the next larger quant would not have fitted fully at this context
            arch = arch_from_catalog(model)
            bigger = [c for c in candidates_from_catalog(model) if c.weights.total > next(
                c2.weights.total for c2 in candidates_from_catalog(model) if c2.quant == chosen.quant)]
            for c in bigger:
                assert _full_gpu(arch, c.weights, chosen.n_ctx, "q8_0").gpu > gpu_budget, (model_id, c.quant)


EXPECTED = [
    # (machine, model, quant or None for "too big", mode, detail)
    ("laptop-8gb-cpu", "qwen3-4b", "Q4_K_M", "cpu", None),
    ("laptop-8gb-cpu", "qwen3-30b-a3b", None, None, None),
    ("apple-m-16gb", "qwen3-8b", "Q6_K", "gpu", None),
    ("apple-m-16gb", "qwen3-14b", "Q4_K_M", "gpu", "reduced context"),
    ("apple-m-16gb", "qwen3-30b-a3b", None, None, None),  # 17 GB of weights in 16 GB of unified memory
    ("nvidia-12gb", "qwen3-8b", "Q8_0", "gpu", None),
    ("nvidia-12gb", "qwen3-32b", "Q4_K_M", "partial", "layers"),
    ("nvidia-12gb", "qwen3-30b-a3b", "Q4_K_M", "partial", "experts"),
    ("nvidia-24gb", "qwen3-30b-a3b", "Q5_K_M", "gpu", None),
    ("nvidia-24gb", "qwen3-32b", "Q4_K_M", "gpu", "reduced context"),
    ("nvidia-2x24gb", "qwen3-32b", "Q8_0", "gpu", None),
    ("nvidia-2x24gb", "qwen3-235b-a22b", "Q4_K_M", "partial", "experts"),
    ("workstation-64gb", "qwen3-30b-a3b", "Q4_K_M", "cpu", None),
    ("workstation-64gb", "qwen3-235b-a22b", None, None, None),
    ("workstation-256gb", "qwen3-235b-a22b", "Q4_K_M", "cpu", None),
]


@pytest.mark.parametrize(("machine_id", "model_id", "quant", "mode", "detail"), EXPECTED)
def test_expected_choices(machine_id: str, model_id: str, quant: str | None, mode: str | None,
                          detail: str | None) -> None:
    chosen = try_plan(model_id, machine_id)
    if quant is None:
        assert chosen is None
        return
    assert chosen is not None and (chosen.quant, chosen.mode) == (quant, mode), chosen
    if detail == "experts":
        assert chosen.n_cpu_moe > 0 and chosen.n_gpu_layers == -1
    if detail == "layers":
        assert 0 < chosen.n_gpu_layers < MODELS[model_id].layers
    if detail == "reduced context":
        assert chosen.n_ctx < 40960
    elif mode != "cpu" or detail is None:
        assert chosen.n_ctx == 40960 or mode == "cpu"


def test_yarn_only_beyond_the_native_context() -> None:
    assert try_plan("qwen3-8b", "workstation-256gb", 32768).yarn_factor == 0
    assert try_plan("qwen3-8b", "workstation-256gb", 40960).yarn_factor == 0
    assert try_plan("qwen3-8b", "workstation-256gb", 65536).yarn_factor == 2
    long = try_plan("qwen3-8b", "workstation-256gb", 131072)
    assert long.yarn_factor == 4 and any("yarn_orig_ctx" in r for r in long.reasons)
    with pytest.raises(DoesNotFit, match="at most 131,072 tokens of context with YaRN"):
        plan(arch_from_catalog(MODELS["qwen3-8b"]), candidates_from_catalog(MODELS["qwen3-8b"]),
             MACHINES["workstation-256gb"], 200_000)
    assert try_plan("qwen3-30b-a3b-instruct-2507", "workstation-256gb", 262144).yarn_factor == 0
    with pytest.raises(DoesNotFit, match="at most 40,960"):
        plan(arch_from_catalog(MODELS["qwen3-0.6b"]), candidates_from_catalog(MODELS["qwen3-0.6b"]),
             MACHINES["workstation-256gb"], 65536)


def test_q8_kv_cache_comes_with_flash_attention() -> None:
    for machine_id in MACHINES:
        for model_id in MODELS:
            chosen = try_plan(model_id, machine_id)
            if chosen and chosen.kv_type == "q8_0":
                assert chosen.flash_attn


def test_too_big_names_need_and_budget() -> None:
    model = MODELS["qwen3-235b-a22b"]
    with pytest.raises(DoesNotFit, match=r"needs about [\d.]+ GiB, but [\d.]+ GiB of RAM is free"):
        plan(arch_from_catalog(model), candidates_from_catalog(model), MACHINES["laptop-8gb-cpu"])





@pytest.mark.parametrize("n_ctx", [4096, 16384, 32768])
def test_predictions_within_5_percent_of_llama_cpp(real_model: Path, n_ctx: int) -> None:
    info = read_model_info(real_model)
    arch = arch_from_info(info)
    weights = candidate_from_info(info).weights
    reported = llama_cpp_reported_sizes(real_model, n_ctx)
    # the engine's default here is what a CPU plan asks for: f16 KV cache, no flash attention
    predicted = {"model": weights.cpu_model_buffers / (1 << 20), "KV": arch.kv_bytes(n_ctx, "f16") / (1 << 20),
                 "compute": compute_bytes(arch, n_ctx, flash_attn=False) / (1 << 20)}
    for kind in predicted:
        assert reported[kind] > 0, kind
        assert abs(predicted[kind] - reported[kind]) / reported[kind] <= 0.05, (kind, predicted, reported)
