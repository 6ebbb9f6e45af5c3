"""Context presets per model, and YaRN only beyond the native length (the planner sets the factor)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from qwen_chat.gguf.files import ModelInfo, read_model_info
from qwen_chat.qwen3.context_presets import context_presets, preset_for
from qwen_chat.qwen3.template import Variant
from qwen_chat.session.model_loading import plan_for_file
from qwen_chat.system.hardware import Machine

GiB = 1 << 30
BIG_MACHINE = Machine(512 * GiB, 500 * GiB, 32, 64, (), False)


def _like(tiny: Path, context_length: int, block_count: int) -> ModelInfo:
    return dataclasses.replace(read_model_info(tiny), context_length=context_length, block_count=block_count)


def test_hybrid_qwen3_offers_yarn_64k_and_128k(tiny_models: dict[str, Path]) -> None:
    info = _like(tiny_models["hybrid"], 40960, 36)  # Qwen3-8B's shape
    keys = {p.key: p.n_ctx for p in context_presets(info, Variant.HYBRID)}
    assert keys == {"auto": None, "native": 40960, "64k": 65536, "128k": 131072}


def test_small_hybrid_and_2507_models(tiny_models: dict[str, Path]) -> None:
    small = _like(tiny_models["hybrid"], 40960, 28)  # Qwen3-0.6B/1.7B: no YaRN
    assert {p.key for p in context_presets(small, Variant.HYBRID)} == {"auto", "native"}
    instruct = _like(tiny_models["none"], 262144, 48)
    presets = {p.key: p.n_ctx for p in context_presets(instruct, Variant.NO_THINKING)}
    assert presets == {"auto": None, "native": 262144, "256k": 262144}
    assert preset_for("128K", instruct, Variant.NO_THINKING) is None  # not offered: refused by the caller
    assert preset_for("256K", instruct, Variant.NO_THINKING).n_ctx == 262144


def test_yarn_is_applied_only_beyond_the_native_context(tiny_models: dict[str, Path]) -> None:
    info = _like(tiny_models["hybrid"], 40960, 36)
    factors = {ctx: plan_for_file(info, Variant.HYBRID, BIG_MACHINE, ctx).yarn_factor
               for ctx in (32768, 40960, 65536, 131072)}
    assert factors == {32768: 0, 40960: 0, 65536: 2, 131072: 4}
