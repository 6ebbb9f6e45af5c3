"""Which catalog model to suggest on this machine: the most capable one that still answers at an interactive
speed (speed.py's decode estimate), else the fastest that fits, with the reason in one line.

The first run offers two (`offers`): a quick start (a small Qwen3 of at most ~2.5 GB, chatting within minutes
of the download) and the most capable model that fits with room to spare: the RAM a laptop keeps for the OS
and its open apps (RAM_MARGIN_SHARE of it, at least RAM_MARGIN_MIN) is left out, on a GPU the planner's
GPU_MARGIN (1 GiB a device, llama.cpp's own `--fit` target), and it must answer a pasted file of
FIRST_WORD_PROMPT tokens within FIRST_WORD_SECONDS."""

from __future__ import annotations

from dataclasses import dataclass, replace

from qwen_chat.catalog.entries import CatalogModel
from qwen_chat.planning.plan_inputs import arch_from_catalog, candidates_from_catalog
from qwen_chat.planning.planner import DoesNotFit, GiB, Plan, plan
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
# The quick start: the smallest Qwen3 models that still answer well, best first; at most QUICK_MAX_BYTES.
QUICK_START = ["qwen3-4b-instruct-2507", "qwen3.5-4b", "qwen3-4b", "qwen3.5-2b", "qwen3-1.7b", "qwen3.5-0.8b",
               "qwen3-0.6b"]
QUICK_MAX_BYTES = 2_600_000_000  # "~2.5 GB": Qwen3-4B Q4_K_M is 2.50 GB
RAM_MARGIN_SHARE, RAM_MARGIN_MIN = 0.25, 4 * GiB
FIRST_WORD_PROMPT, FIRST_WORD_SECONDS = 2000, 15.0


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


# ---- the first run's two offers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    model: CatalogModel
    plan: Plan
    estimate: Estimate

    @property
    def ref(self) -> str:
        return f"{self.model.id}:{self.plan.quant}"

    @property
    def first_word_seconds(self) -> float:
        """Time to the first token of an answer to a FIRST_WORD_PROMPT-token prompt (prompt evaluation)."""
        return FIRST_WORD_PROMPT / self.estimate.prompt if self.estimate.prompt else float("inf")


@dataclass(frozen=True)
class Offers:
    quick: Offer | None  # the quick start
    capable: Offer | None  # the most capable that fits with the margin; None when no better than the quick start
    margin_bytes: int  # RAM left for the OS and the apps
    note: str = ""  # why there is no capable pick, when there is none


def ram_margin(machine: Machine) -> int:
    """RAM the capable pick leaves for the OS and the apps: a quarter of it, at least 4 GiB."""
    return max(RAM_MARGIN_MIN, int(machine.ram_total * RAM_MARGIN_SHARE))


def with_margin(machine: Machine, margin: int) -> Machine:
    """The machine as the planner should see it to leave `margin` of its RAM unused: the planner keeps its own
    small reserve (planner.budgets: max(1 GiB, 5%)) off `ram_available`, so that is added back here."""
    reserve = max(GiB, machine.ram_total // 20)
    return replace(machine, ram_available=max(0, min(machine.ram_available, machine.ram_total - margin + reserve)))


def offers(machine: Machine, models: dict[str, CatalogModel], rates: Rates,
           min_tokens_per_second: float = MIN_TOKENS_PER_SECOND, margin: int | None = None) -> Offers:
    margin = ram_margin(machine) if margin is None else margin
    roomy = with_margin(machine, margin)
    quick = _quick_start(roomy, models, rates, min_tokens_per_second) or _quick_start(machine, models, rates, 0.0)
    # more capable than the quick start means earlier in PREFERENCE
    last = PREFERENCE.index(quick.model.id) if quick is not None and quick.model.id in PREFERENCE else None
    capable = None
    for model, chosen, estimate in runnable(roomy, models, rates):
        offer = Offer(model, chosen, estimate)
        if last is not None and PREFERENCE.index(model.id) >= last:
            break
        if estimate.decode >= min_tokens_per_second and offer.first_word_seconds <= FIRST_WORD_SECONDS:
            capable = offer
            break
    note = "" if capable is not None else (
        f"no model larger than the quick start starts answering a {FIRST_WORD_PROMPT:,}-token prompt within "
        f"{FIRST_WORD_SECONDS:g} s and writes {min_tokens_per_second:g} tok/s here while leaving "
        f"{margin / GiB:.1f} GiB of RAM free")
    return Offers(quick, capable, margin, note)


def _quick_start(machine: Machine, models: dict[str, CatalogModel], rates: Rates, floor: float) -> Offer | None:
    """The first QUICK_START model whose small quant fits and answers at `floor` tok/s."""
    for model_id in QUICK_START:
        model = models.get(model_id)
        if model is None:
            continue
        small = [q for q in model.quants.values() if q.size <= QUICK_MAX_BYTES]
        quant = model.quants.get("Q4_K_M") if "Q4_K_M" in model.quants and model.quants["Q4_K_M"] in small else \
            max(small, key=lambda q: q.size, default=None)
        if quant is None:
            continue
        try:
            chosen = plan(arch_from_catalog(model), candidates_from_catalog(model, quant), machine)
        except DoesNotFit:
            continue
        estimate = predict(workload_from_catalog(model, quant), chosen, rates)
        if estimate.decode >= floor:
            return Offer(model, chosen, estimate)
    return None
