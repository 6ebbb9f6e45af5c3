"""Sampling for Qwen3: the engine's sampling values, and Qwen's own presets with the ranges each field allows.

Qwen's presets (the catalog's `presets:`) are *slots* picked by the model's variant and the mode (`preset_name`);
config/presets.py puts the user's edits and named presets on top.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

from qwen_chat.catalog.entries import load_catalog
from qwen_chat.qwen3.template import Variant

MAX_THINKING_BUDGET = 262144  # tokens: the largest context any Qwen3 model has
MAX_SEED = 2**32 - 1  # llama.cpp's sampler seeds are 32-bit


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    min_p: float = 0.0
    presence_penalty: float = 0.0
    max_tokens: int = 32768
    seed: int | None = None  # None: a random seed for each answer


SLOTS = ("hybrid-thinking", "hybrid-non-thinking", "instruct-2507", "thinking-2507", "qwen35-thinking",
         "qwen35-non-thinking")
THINKING_SLOTS = ("hybrid-thinking", "thinking-2507", "qwen35-thinking")
DEFAULT_BASE = "hybrid-thinking"
FIELDS = ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "max_output", "thinking_budget", "seed")


@dataclass(frozen=True)
class PresetValues:
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    presence_penalty: float
    max_output: int
    thinking_budget: int = 0  # tokens of thinking per answer; 0 = off (no limit)
    seed: int | None = None  # the same seed and prompt give the same answer; None: random (Qwen's presets)


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    integer: bool = False
    low_open: bool = False  # the low end itself is not allowed (top_p > 0)
    note: str = ""  # e.g. "0 = off"
    optional: bool = False  # no value (None; an empty field, a key left out) is valid too

    def describe(self) -> str:
        """The range as a label shows it: "0.0–2.0", ">0.0–1.0", "0–1000, 0 = off"."""
        low, high = (int(self.low), int(self.high)) if self.integer else (self.low, self.high)
        text = f"{'>' if self.low_open else ''}{low}–{high}"
        return f"{text}, {self.note}" if self.note else text

    def problem(self, value: object) -> str | None:
        """Why `value` is not valid here (without the field name), or None."""
        if value is None and self.optional:
            return None
        low, high = (int(self.low), int(self.high)) if self.integer else (self.low, self.high)
        where = f"above {low} and at most {high}" if self.low_open else f"between {low} and {high}"
        where += f", {self.note}" if self.note else ""
        wrong_type = isinstance(value, bool) or not isinstance(value, (int, float))
        if wrong_type or not isinstance(value, (int, float)) or (self.integer and isinstance(value, float)):
            return f"must be {'a whole number' if self.integer else 'a number'} {where} (got {value!r})"
        above_low = self.low < value if self.low_open else self.low <= value
        if not math.isfinite(value) or not above_low or value > self.high:
            return f"must be {where} (got {value!r})"
        return None


RANGES: dict[str, Range] = {
    "temperature": Range(0.0, 2.0),
    "top_p": Range(0.0, 1.0, low_open=True),
    "top_k": Range(0, 1000, integer=True, note="0 = off"),
    "min_p": Range(0.0, 1.0),
    "presence_penalty": Range(0.0, 2.0),
    "max_output": Range(1, 262144, integer=True),
    "thinking_budget": Range(0, MAX_THINKING_BUDGET, integer=True, note="0 = off"),
    "seed": Range(0, MAX_SEED, integer=True, note="empty = random", optional=True),
}


def validate(field: str, value: object) -> str | None:
    """None when `value` is valid for `field`, else e.g. "temperature must be between 0.0 and 2.0 (got 3)"."""
    if field not in RANGES:
        return f"{field} is not a preset field (fields: {', '.join(FIELDS)})"
    problem = RANGES[field].problem(value)
    return f"{field} {problem}" if problem else None


def parse(field: str, text: str) -> tuple[float | int | None, str | None]:
    """A field typed as text: (value, None) when valid, (None, message with the valid range) when not; an
    optional field left empty is (None, None)."""
    text = text.strip()
    if not text and field in RANGES and RANGES[field].optional:
        return None, None
    value: object = text  # text that is no number is reported below, with the valid range
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            value = kind(text)
            break
    problem = validate(field, value)
    if problem or not isinstance(value, (int, float)):
        return None, problem
    return (value if RANGES[field].integer else float(value)), None


def preset_name(variant: Variant, thinking: bool) -> str:
    if variant is Variant.ALWAYS_THINKS:
        return "thinking-2507"
    if variant is Variant.NO_THINKING:
        return "instruct-2507"  # also the sensible choice for non-Qwen3 chat models
    if variant is Variant.SWITCHABLE:  # Qwen3.5 / 3.6: their own cards' values
        return "qwen35-thinking" if thinking else "qwen35-non-thinking"
    return "hybrid-thinking" if thinking else "hybrid-non-thinking"


def qwen_preset(name: str, quantized: bool) -> PresetValues:
    """Qwen's values from the catalog, untouched by the user's settings."""
    presets = load_catalog()["presets"]
    if name not in presets:
        raise ValueError(f"no Qwen preset {name!r} (presets: {', '.join(presets)})")
    preset = presets[name]
    return PresetValues(
        temperature=float(preset["temperature"]),
        top_p=float(preset["top_p"]),
        top_k=int(preset["top_k"]),
        min_p=float(preset["min_p"]),
        presence_penalty=float(preset["presence_penalty_quantized" if quantized else "presence_penalty"]),
        max_output=int(preset["max_output"]),
    )
