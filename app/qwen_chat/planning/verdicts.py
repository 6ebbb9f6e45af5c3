"""Per machine, what each catalog quant would do: fully on the GPU, partly, CPU only or too big."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qwen_chat.catalog.entries import CatalogModel, Quant
from qwen_chat.planning.plan_inputs import arch_from_catalog, candidates_from_catalog
from qwen_chat.planning.planner import DoesNotFit, Plan, plan
from qwen_chat.system.hardware import Machine
from qwen_chat.system.paths import models_dir


@dataclass(frozen=True)
class QuantVerdict:
    quant: Quant
    verdict: str  # "runs fully on GPU" | "runs partly on GPU" | "CPU only" | "too big"
    plan: Plan | None
    downloaded: bool


def downloaded(quant: Quant) -> bool:
    folder = models_dir()
    return all((folder / Path(f.path).name).is_file() for f in quant.files)


def verdicts(model: CatalogModel, machine: Machine) -> tuple[list[QuantVerdict], str | None]:
    """Each quant on its own, and the quant the planner picks among all of them."""
    arch = arch_from_catalog(model)
    rows = []
    for quant in model.quants.values():
        try:
            chosen: Plan | None = plan(arch, candidates_from_catalog(model, quant), machine)
        except DoesNotFit:
            chosen = None
        rows.append(QuantVerdict(quant, chosen.verdict if chosen else "too big", chosen, downloaded(quant)))
    try:
        best = plan(arch, candidates_from_catalog(model), machine).quant
    except DoesNotFit:
        best = None
    return rows, best
