"""Qwen's sampling presets, chosen by variant, mode and whether the file is quantized."""

from __future__ import annotations

from .catalog import load_catalog
from .engine import Sampling
from .qwen3 import Variant


def preset_name(variant: Variant, thinking: bool) -> str:
    if variant is Variant.ALWAYS_THINKS:
        return "thinking-2507"
    if variant is Variant.NO_THINKING:
        return "instruct-2507"  # also the sensible choice for non-Qwen3 chat models
    return "hybrid-thinking" if thinking else "hybrid-non-thinking"


def sampling_for(variant: Variant, thinking: bool, quantized: bool, context_left: int | None = None) -> Sampling:
    """Never greedy in thinking mode: every preset samples with temperature > 0."""
    preset = load_catalog()["presets"][preset_name(variant, thinking)]
    max_tokens = int(preset["max_output"])
    if context_left is not None:
        max_tokens = max(1, min(max_tokens, context_left))
    return Sampling(
        temperature=float(preset["temperature"]),
        top_p=float(preset["top_p"]),
        top_k=int(preset["top_k"]),
        min_p=float(preset["min_p"]),
        presence_penalty=float(preset["presence_penalty_quantized" if quantized else "presence_penalty"]),
        max_tokens=max_tokens,
    )
