"""Which catalog model to suggest on this machine: the most capable one that still answers at an interactive
speed (speed.py's decode estimate), else the fastest that fits, with the reason in one line."""

from __future__ import annotations

from dataclasses import dataclass

from qwen_chat.catalog.entries import CatalogModel
from qwen_chat.planning.plan_inputs import arch_from_catalog, candidates_from_catalog
from qwen_chat.planning.planner import DoesNotFit, Plan, plan
from qwen_chat.planning.speed import Estimate, Rates, predict, workload_from_catalog
from qwen_chat.system.hardware import Machine

# Most capable first (newest and largest); each is planned in turn and the first fast enough wins.
# Qwen3.6 / 3.5 come first where they fit: newer, and their hybrid attention keeps long contexts cheap.
PREFERENCE = ["qwen3.6-35b-a3b", "qwen3.5-35b-a3b", "qwen3-30b-a3b-instruct-2507", "qwen3.5-9b", "qwen3-14b",
              "qwen3-8b", "qwen3.5-4b", "qwen3-4b-instruct-2507", "qwen3-4b", "qwen3.5-2b", "qwen3-1.7b",
              "qwen3.5-0.8b", "qwen3-0.6b"]
# Below this a reply visibly crawls: people read about 5-8 words a second, ~1.3 tokens a word. settings.toml
# [chat] min_tokens_per_second changes it.
MIN_TOKENS_PER_SECOND = 8.0


@dataclass(frozen=True)
class Pick:
    model: CatalogModel
    plan: Plan
    estimate: Estimate
    reason: str  # one line: the speed here and why this one


def runnable(machine: Machine, models: dict[str, CatalogModel], rates: Rates) -> list[tuple[CatalogModel, Plan,
                                                                                           Estimate]]:
    """The PREFERENCE models that fit, in that order, each with its plan and expected speed."""
    found = []
    for model_id in PREFERENCE:
        model = models.get(model_id)
        if model is None:
            continue
        try:
            chosen = plan(arch_from_catalog(model), candidates_from_catalog(model), machine)
        except DoesNotFit:
            continue
        found.append((model, chosen, predict(workload_from_catalog(model, model.quants[chosen.quant]), chosen, rates)))
    return found


def choose(machine: Machine, models: dict[str, CatalogModel], rates: Rates,
           min_tokens_per_second: float = MIN_TOKENS_PER_SECOND) -> Pick | None:
    fits = runnable(machine, models, rates)
    if not fits:
        return None
    index = next((i for i, f in enumerate(fits) if f[2].decode >= min_tokens_per_second), None)
    fast = index is not None
    if index is None:
        index = max(range(len(fits)), key=lambda i: fits[i][2].decode)
    model, chosen, estimate = fits[index]
    slower = [f for f in fits[:index] if f[2].decode < estimate.decode]  # more capable, skipped for speed
    return Pick(model, chosen, estimate, _reason(model, chosen, estimate, slower, fast, index == 0,
                                                 min_tokens_per_second))


def _reason(model: CatalogModel, chosen: Plan, estimate: Estimate, slower: list[tuple[CatalogModel, Plan, Estimate]],
            fast: bool, first: bool, minimum: float) -> str:
    line = f"{model.name} {chosen.quant}: {estimate.short()} here"
    if model.is_moe and model.active_params:
        line += f" ({model.active_params / 1e9:.1f}B active parameters)"
    if slower:
        other, _, other_speed = slower[0]
        line += f", faster than {other.name} ({other_speed.short()})"
    elif first:
        line += ", the most capable model that fits"
    if not fast:
        line += f"; the fastest that fits, none reaches {minimum:g} tok/s here"
    return line + ("" if estimate.measured else " (speeds estimated, not measured)")
