"""Context presets a model offers: its native length, and YaRN ×2 / ×4 where Qwen says it works.

Qwen3 hybrid GGUFs from 4B up say 40,960 positions (32,768 native plus room for output) and support YaRN over
32,768 (`yarn_orig_ctx`) up to 131,072; the 2507 releases are natively 262,144. YaRN is applied only when the
chosen context exceeds the native one: the planner decides the factor from the length asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

from qwen_chat.gguf.files import ModelInfo
from qwen_chat.qwen3.template import Variant

YARN_BASE = 32768  # Qwen's yarn_orig_ctx


@dataclass(frozen=True)
class ContextPreset:
    key: str  # "auto", "native", "64k", "128k", "256k": the names settings.toml and `/context` accept
    n_ctx: int | None  # None: the planner's choice for this machine
    label: str


def supports_yarn(info: ModelInfo, variant: Variant) -> bool:
    """Qwen3 hybrid models from 4B up (0.6B and 1.7B are 32,768 only)."""
    return variant is Variant.HYBRID and info.context_length == 40960 and info.block_count > 28


def context_presets(info: ModelInfo, variant: Variant) -> list[ContextPreset]:
    native = info.context_length
    presets = [
        ContextPreset("auto", None, "Auto: the largest that fits this machine's memory"),
        ContextPreset("native", native, f"Native: {native:,} tokens"),
    ]
    if supports_yarn(info, variant):
        presets += [
            ContextPreset("64k", 2 * YARN_BASE, f"64K: {2 * YARN_BASE:,} tokens (YaRN ×2)"),
            ContextPreset("128k", 4 * YARN_BASE, f"128K: {4 * YARN_BASE:,} tokens (YaRN ×4)"),
        ]
    elif native >= 262144:
        presets[1] = ContextPreset("native", native, f"Native 256K: {native:,} tokens")
        presets.append(ContextPreset("256k", native, f"256K: {native:,} tokens (native)"))
    return presets


def preset_for(key: str, info: ModelInfo, variant: Variant) -> ContextPreset | None:
    """The preset named `key` if this model offers it (e.g. "128k" on a 2507 model falls back to None)."""
    return next((p for p in context_presets(info, variant) if p.key == key.lower()), None)
