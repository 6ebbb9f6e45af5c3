"""The simple load bound: the largest context that fits, and a refusal that names the numbers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from qwen_chat.gguf_files import ModelInfo
from qwen_chat.hardware import Device, Machine
from qwen_chat.memory_fit import DoesNotFit, GiB, plan_load

QWEN3_8B_Q4 = ModelInfo(
    path=Path("Qwen3-8B-Q4_K_M.gguf"), shards=(), size_bytes=5_027_783_488, architecture="qwen3", name="Qwen3-8B",
    context_length=40960, block_count=36, embedding_length=4096, head_count=32, head_count_kv=8, key_length=128,
    value_length=128, expert_count=0, file_type=15, chat_template=None, bos_token="", eos_token="<|im_end|>")


def machine(ram_gib: float, gpu_gib: float = 0) -> Machine:
    gpus = (Device("CUDA0", "test GPU", "gpu", int(gpu_gib * GiB), int(gpu_gib * GiB)),) if gpu_gib else ()
    return Machine(int(ram_gib * 2 * GiB), int(ram_gib * GiB), 8, 16, gpus, bool(gpus))


def test_kv_per_token_uses_key_length() -> None:
    assert QWEN3_8B_Q4.kv_bytes_per_token() == 36 * 8 * (128 + 128) * 2  # 147,456 bytes (144 KiB)


def test_big_machine_gets_full_context() -> None:
    plan = plan_load(QWEN3_8B_Q4, machine(64))
    assert plan.n_ctx == 40960 and plan.n_gpu_layers == 0
    assert plan.needed_bytes <= plan.available_bytes


def test_small_machine_gets_the_context_that_fits() -> None:
    plan = plan_load(QWEN3_8B_Q4, machine(8))
    assert 2048 <= plan.n_ctx < 40960 and plan.n_ctx % 256 == 0
    assert plan.needed_bytes <= plan.available_bytes
    assert plan.needed_bytes + 256 * QWEN3_8B_Q4.kv_bytes_per_token() > plan.available_bytes  # uses most of it


def test_refusal_names_needed_and_available() -> None:
    with pytest.raises(DoesNotFit, match=r"needs at least [\d.]+ GiB .* only 4.0 GiB of memory is available"):
        plan_load(QWEN3_8B_Q4, machine(4))
    with pytest.raises(DoesNotFit, match=r"131,072-token context needs about [\d.]+ GiB .*largest context"):
        plan_load(QWEN3_8B_Q4, machine(16), requested_ctx=131072)


def test_gpu_offload_all_or_part() -> None:
    assert plan_load(QWEN3_8B_Q4, machine(32, gpu_gib=24)).n_gpu_layers == -1
    partial = plan_load(QWEN3_8B_Q4, machine(32, gpu_gib=4), requested_ctx=8192).n_gpu_layers
    assert 0 < partial < 36
    cpu_build = replace(machine(32, gpu_gib=24), gpu_offload=False)
    assert plan_load(QWEN3_8B_Q4, cpu_build).n_gpu_layers == 0
