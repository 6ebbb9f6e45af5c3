"""Which draft model runs beside the model, if any: a smaller Qwen3 of the same vocabulary that proposes tokens
for speculative decoding (engines/draft_model.py), chosen here so the user never has to.

A draft is chosen when the model is a Qwen3 dense or MoE model (`qwen3`, `qwen3moe`) of 4B parameters and up, a
smaller Qwen3 (0.6B, 1.7B: one tokenizer of 151,936 tokens for the whole family) is in the models folder with the
same vocabulary (gguf/vocab.py reads both headers), and memory holds it beside the model: its weights, its KV
cache and its compute buffer, counted where the model runs (on the GPU when the model is fully there, in RAM when
it runs on the CPU; a model that already spills to the CPU leaves no room). When none is on disk, a catalog one
that would fit is offered with its size. Hybrid recurrent models (Qwen3-Next, Qwen3.5, Qwen3.6) get none: their
recurrent state cannot be rolled back after a rejected draft with llama-cpp-python 0.3.36.

Which size: the largest on hand of at most a sixth of the model's active parameters (Qwen3-0.6B for 4B-8B,
1.7B from 14B), else the smallest one within a quarter; a bigger draft is accepted more often but costs more per
token than it saves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qwen_chat.catalog.entries import QWEN3_VOCAB, CatalogModel
from qwen_chat.gguf.files import ModelFileError, ModelInfo, read_model_info
from qwen_chat.gguf.vocab import vocabulary_mismatch
from qwen_chat.planning.plan_inputs import arch_from_catalog, arch_from_info, candidate_from_info, weights_from_catalog
from qwen_chat.planning.planner import MIN_CTX, Arch, Plan, Weights, _cpu, _full_gpu, gib
from qwen_chat.planning.verdicts import downloaded
from qwen_chat.system.hardware import Machine
from qwen_chat.system.paths import models_dir

MIN_TARGET_PARAMS = 3_500_000_000  # "4B and up" (Qwen3-4B has 4.02B)
IDEAL_SHARE, MAX_SHARE = 1 / 6, 1 / 4  # the draft's parameters against the model's active ones
TARGET_ARCHES, DRAFT_ARCHES = ("qwen3", "qwen3moe"), ("qwen3",)
HYBRID = ("qwen3next", "qwen35", "qwen35moe")
_MAX_DRAFT_FILE = 4_000_000_000  # bytes: files above this are not read as possible drafts
_HYBRID_REASON = ("{name} is a hybrid recurrent model (Qwen3-Next, Qwen3.5, Qwen3.6): llama-cpp-python 0.3.36 "
                  "cannot roll its recurrent state back after a rejected draft, so it runs without a draft model")


@dataclass(frozen=True)
class DraftTarget:
    """The model a draft would serve."""

    name: str
    architecture: str
    params: int
    active_params: int  # MoE: the parameters one token uses; dense: all
    n_vocab: int
    recurrent: bool
    info: ModelInfo | None = None  # a file on disk (its vocabulary is compared); None: a catalog entry
    size: int = 0  # bytes of its file (a draft is much smaller)


@dataclass(frozen=True)
class DraftOption:
    """A possible draft: a file in the models folder (`info`) or a catalog quant to download (`ref`)."""

    name: str
    params: int
    size: int
    arch: Arch
    weights: Weights
    info: ModelInfo | None = None
    ref: str | None = None

    @property
    def path(self) -> Path | None:
        return self.info.path if self.info else None


@dataclass(frozen=True)
class DraftChoice:
    """The planner's answer: `option` loads beside the model with this context, KV type and placement; or none
    (`reason` says why, and `offer` names a download that would fit)."""

    option: DraftOption | None
    reason: str
    n_ctx: int = 0
    kv_type: str = "f16"
    on_gpu: bool = False
    gpu_bytes: int = 0
    ram_bytes: int = 0
    offer: DraftOption | None = None

    def describe(self) -> str:
        if self.option is None:
            return f"none: {self.reason}"
        where = f"on the GPU, {gib(self.gpu_bytes)} GPU + {gib(self.ram_bytes)} RAM" if self.on_gpu else \
            f"on the CPU, {gib(self.ram_bytes)} RAM"
        return (f"{self.option.name} ({self.option.params / 1e9:.1f}B) {where}, context {self.n_ctx:,}, KV cache "
                f"{self.kv_type}: {self.reason}")


# ---- the model the draft would serve --------------------------------------------------------------------


def target_from_info(info: ModelInfo) -> DraftTarget:
    params, active = parameter_counts(info)
    return DraftTarget(info.path.name, info.architecture, params, active, info.n_vocab,
                       info.recurrence is not None or info.architecture in HYBRID, info, info.size_bytes)


def target_from_catalog(model: CatalogModel, size: int = 0) -> DraftTarget:
    arch = "qwen3moe" if model.is_moe else "qwen3"
    recurrent = model.recurrent_state_bytes > 0 or model.kv_layers is not None or model.vocab_size != QWEN3_VOCAB
    return DraftTarget(model.name, arch, model.params, model.active_params or model.params, model.vocab_size,
                       recurrent, None, size)


def parameter_counts(info: ModelInfo) -> tuple[int, int]:
    """(all parameters, those one token uses) from the tensor table: an MoE token uses `expert_used_count` of
    the `expert_count` routed experts."""
    total = experts = 0
    for header in info.headers:
        for tensor in header.tensors:
            n = math.prod(tensor.shape)
            total += n
            if "_exps." in tensor.name:
                experts += n
    used = info.headers[0].metadata.get(f"{info.architecture}.expert_used_count", 0) if info.headers else 0
    if experts and info.expert_count and isinstance(used, int):
        return total, total - experts + experts * used // info.expert_count
    return total, total


def refuse_target(target: DraftTarget) -> str | None:
    """Why this model gets no draft whatever is on disk, or None."""
    if target.recurrent:
        return _HYBRID_REASON.format(name=target.name)
    if target.architecture not in TARGET_ARCHES:
        return f"draft models are chosen for Qwen3 models only ({target.name} is {target.architecture})"
    if target.params < MIN_TARGET_PARAMS:
        return (f"{target.name} has {target.params / 1e9:.1f}B parameters: a draft model pays for models of 4B "
                "and up")
    return None


# ---- the drafts there are ---------------------------------------------------------------------------------


def local_options(target: DraftTarget, folder: Path | None = None) -> list[DraftOption]:
    """Qwen3 GGUFs in the models folder (and one folder below) small enough to draft for `target`."""
    folder = folder or models_dir()
    limit = min(_MAX_DRAFT_FILE, target.size // 3) if target.size else _MAX_DRAFT_FILE
    found = []
    own = target.info.path.resolve() if target.info else None
    for path in sorted([*folder.glob("*.gguf"), *folder.glob("*/*.gguf")]):
        if path.name.startswith(".") or "-of-" in path.name and "-00001-of-" not in path.name:
            continue
        try:
            if path.stat().st_size > limit or path.resolve() == own:
                continue
            info = read_model_info(path)
        except (OSError, ModelFileError):
            continue  # a broken or unreadable file is no draft; `list` and F3 report it
        if info.architecture in DRAFT_ARCHES and info.recurrence is None:
            found.append(DraftOption(path.name, parameter_counts(info)[0], info.size_bytes, arch_from_info(info),
                                     candidate_from_info(info).weights, info=info))
    return found


def catalog_options(models: dict[str, CatalogModel]) -> list[DraftOption]:
    """Catalog quants of small dense Qwen3 models not downloaded yet: what to offer when none is on disk."""
    offers = []
    for model in models.values():
        if model.is_moe or model.vocab_size != QWEN3_VOCAB or model.kv_layers is not None \
                or model.recurrent_state_bytes or model.params >= MIN_TARGET_PARAMS:
            continue
        for quant in model.quants.values():
            if not downloaded(quant):
                offers.append(DraftOption(model.name, model.params, quant.size, arch_from_catalog(model),
                                          weights_from_catalog(model, quant), ref=f"{model.id}:{quant.name}"))
    return offers


# ---- the choice -------------------------------------------------------------------------------------------


def choose_draft(target: DraftTarget, chosen: Plan, machine: Machine, local: Sequence[DraftOption],
                 offered: Sequence[DraftOption] = ()) -> DraftChoice:
    """The draft for `target` planned as `chosen` on `machine`, from the files on disk (`local`), else an offer."""
    refused = refuse_target(target)
    if refused:
        return DraftChoice(None, refused)
    if chosen.mode == "partial":
        return DraftChoice(None, f"the model already fills the GPU ({chosen.verdict}): a draft model would take "
                                 "memory its layers need")
    problems: list[str] = []
    for option in _by_preference(target, local, problems):
        mismatch = vocabulary_mismatch(target.info, option.info) if target.info and option.info else None
        if mismatch:
            problems.append(f"{option.name} has {mismatch}")
            continue
        placed = _place(option, chosen, machine, problems)
        if placed is not None:
            return placed
    on_disk = "; ".join(problems) if problems else "no smaller Qwen3 (0.6B, 1.7B) is in the models folder"
    too_big: list[str] = []
    for option in _by_preference(target, offered, []):
        if _place(option, chosen, machine, too_big) is not None:
            return DraftChoice(None, f"{on_disk}; {option.ref} ({option.size / 1e9:.2f} GB) would draft for it and "
                                     f"fit beside it: qwen-chat pull {option.ref}", offer=option)
    return DraftChoice(None, f"{on_disk}; {too_big[0]}" if too_big else on_disk)


def _by_preference(target: DraftTarget, options: Sequence[DraftOption], problems: list[str]) -> list[DraftOption]:
    """Options of a fitting size, best first: the largest within IDEAL_SHARE, then the rest smallest first.
    Files of another vocabulary size are refused here, each named in `problems`."""
    usable = []
    for option in options:
        if option.info is not None and option.info.n_vocab != target.n_vocab:
            problems.append(f"{option.name} has another vocabulary ({option.info.n_vocab:,} tokens; the model has "
                            f"{target.n_vocab:,})")
        elif option.params <= target.active_params * MAX_SHARE:
            usable.append(option)
    ideal = [o for o in usable if o.params <= target.active_params * IDEAL_SHARE]
    ideal.sort(key=lambda o: o.params, reverse=True)
    rest = sorted((o for o in usable if o not in ideal), key=lambda o: o.params)
    return ideal + rest


def _place(option: DraftOption, chosen: Plan, machine: Machine, problems: list[str]) -> DraftChoice | None:
    """The draft beside the model where the model runs: the model's context first (f16, then q8_0 on the GPU),
    then halves of it down to MIN_CTX (it then drafts while the conversation fits that)."""
    on_gpu = chosen.mode == "gpu"
    free_gpu = chosen.gpu_budget - chosen.gpu_bytes
    free_ram = chosen.ram_budget - chosen.ram_bytes - (chosen.gpu_bytes if machine.unified_memory else 0)
    kv_types = ("f16", "q8_0") if on_gpu and option.arch.key_length % 32 == 0 else ("f16",)
    contexts = [chosen.n_ctx]
    while contexts[-1] // 2 >= MIN_CTX:
        contexts.append(contexts[-1] // 2)
    for ctx in contexts:
        for kv in kv_types:
            fit = _full_gpu(option.arch, option.weights, ctx, kv) if on_gpu else \
                _cpu(option.arch, option.weights, ctx, kv)
            ram = fit.ram + (fit.gpu if machine.unified_memory else 0)
            if (not on_gpu or fit.gpu <= free_gpu) and ram <= free_ram:
                short = "" if ctx == chosen.n_ctx else f"; it drafts while the conversation is under {ctx:,} tokens"
                return DraftChoice(option, f"same vocabulary, fits beside the model{short}", ctx, kv, on_gpu,
                                   fit.gpu if on_gpu else 0, fit.ram)
    smallest = (_full_gpu(option.arch, option.weights, contexts[-1], kv_types[-1]).gpu if on_gpu
                else _cpu(option.arch, option.weights, contexts[-1], "f16").ram)
    where = f"{gib(max(0, free_gpu))} of GPU memory" if on_gpu else f"{gib(max(0, free_ram))} of RAM"
    problems.append(f"{option.name} needs at least {gib(smallest)} but {where} is left beside the model")
    return None


def draft_for_file(info: ModelInfo, chosen: Plan, machine: Machine, models: dict[str, CatalogModel] | None = None,
                   folder: Path | None = None) -> DraftChoice:
    """The draft for a model file planned as `chosen`: a file in the models folder, else an offer from
    `models` (the catalog; none offered without it)."""
    target = target_from_info(info)
    if refuse_target(target):
        return choose_draft(target, chosen, machine, ())
    return choose_draft(target, chosen, machine, local_options(target, folder),
                        catalog_options(models) if models else ())


def draft_for_catalog(model: CatalogModel, chosen: Plan, machine: Machine, models: dict[str, CatalogModel],
                      folder: Path | None = None) -> DraftChoice:
    """The draft for a catalog model planned as `chosen` (`qwen-chat plan qwen3-8b`)."""
    size = model.quants[chosen.quant].size if chosen.quant in model.quants else 0
    target = target_from_catalog(model, size)
    if refuse_target(target):
        return choose_draft(target, chosen, machine, ())
    return choose_draft(target, chosen, machine, local_options(target, folder), catalog_options(models))
