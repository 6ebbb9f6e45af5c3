"""From a GGUF path to a load request: read the file, pick the context, plan memory, remember what fit.

Slow (it reads the file and detects the hardware): the UI calls it off its own thread. The CLI calls it once
at start (to refuse a file that cannot fit before the screen opens) and hands the result to the session in
`LocalModel.planned`, so one start reads the file and plans once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from qwen_chat.config.engine_settings import load_engine_settings, threads
from qwen_chat.engines.protocol import DraftLoad, LoadRequest
from qwen_chat.gguf.files import ModelInfo, read_model_info
from qwen_chat.planning import fit_memory
from qwen_chat.planning.draft_choice import DraftChoice, draft_for_file
from qwen_chat.planning.plan_inputs import arch_from_info, candidate_from_info
from qwen_chat.planning.planner import Plan, plan
from qwen_chat.qwen3.context_presets import preset_for
from qwen_chat.qwen3.template import ChatTemplate, Variant
from qwen_chat.session.events import Notice
from qwen_chat.system.hardware import Machine, detect


@dataclass(frozen=True)
class PreparedLoad:
    info: ModelInfo
    template: ChatTemplate
    plan: Plan
    request: LoadRequest
    fit_key: str  # where fit_memory keeps what loaded on this machine
    planner_chose_context: bool
    notice: Notice | None = None  # e.g. the settings' context preset is not offered by this model
    draft: DraftChoice | None = None  # the draft model loaded beside it, or why none (planning/draft_choice.py)


def plan_for_file(info: ModelInfo, variant: Variant, machine: Machine, n_ctx: int | None) -> Plan:
    """Qwen3 hybrid GGUFs from 4B up say 40,960 positions; YaRN ×2/×4 over the native 32,768 goes beyond."""
    hybrid_yarn = variant is Variant.HYBRID and info.context_length == 40960 and info.block_count > 28
    arch = arch_from_info(info, (2, 4) if hybrid_yarn else (), 32768 if hybrid_yarn else None)
    return plan(arch, [candidate_from_info(info)], machine, n_ctx)


def prepare_load(path: Path, n_ctx: int | None = None, machine: Machine | None = None,
                 context: str = "auto") -> PreparedLoad:
    """Check the file and plan memory. Raises ModelFileError, TemplateRenderError or DoesNotFit.

    Without `n_ctx`, `context` names a preset (settings.toml [chat] context); "auto" lets the planner choose.
    """
    return prepare_info(read_model_info(path), n_ctx, machine, context)


def prepare_info(info: ModelInfo, n_ctx: int | None = None, machine: Machine | None = None,
                 context: str = "auto") -> PreparedLoad:
    """`prepare_load` for a file already read (`ask` needs its native context to choose its own)."""
    template = ChatTemplate(info.chat_template, info.bos_token, info.eos_token)
    _ = template.variant  # a broken template fails here, before the load, with the model named
    notice = None
    if n_ctx is None and context != "auto":
        preset = preset_for(context, info, template.variant)
        if preset is None:
            notice = Notice(f"settings.toml: chat.context: {info.path.name} does not offer {context!r}; "
                            "the planner chooses the context instead.", error=True)
        else:
            n_ctx = preset.n_ctx
    machine = machine or detect()
    chosen = plan_for_file(info, template.variant, machine, n_ctx)
    fit_key = fit_memory.key(machine, info.path, info.size_bytes)
    remembered = fit_memory.remembered_layers(fit_key)
    n_gpu = chosen.n_gpu_layers
    if remembered is not None and n_gpu != 0 and (n_gpu < 0 or remembered < n_gpu):
        n_gpu = remembered  # a load with more layers failed for memory here before
    # a model that once failed to fit as planned gets no draft: the draft's memory is what it lacked
    draft = _choose_draft(info, chosen, machine) if n_gpu == chosen.n_gpu_layers else None
    count = threads().count
    request = LoadRequest(info.path, chosen.n_ctx, n_gpu, count, count, n_cpu_moe=chosen.n_cpu_moe,
                          kv_type=chosen.kv_type, flash_attn=chosen.flash_attn, yarn_factor=chosen.yarn_factor,
                          yarn_orig_ctx=32768, draft=draft_load(draft),
                          speculative=load_engine_settings().speculative)
    return PreparedLoad(info, template, chosen, request, fit_key, n_ctx is None, notice, draft)


def _choose_draft(info: ModelInfo, chosen: Plan, machine: Machine) -> DraftChoice:
    """The draft model for this load: a file in the models folder, else the catalog's offer (none offered when
    the user's catalog is broken: that is reported at start)."""
    from qwen_chat.catalog.entries import CatalogError
    from qwen_chat.catalog.loader import load_models

    try:
        models = load_models()
    except CatalogError:
        models = None
    return draft_for_file(info, chosen, machine, models)


def draft_load(choice: DraftChoice | None) -> DraftLoad | None:
    """What the engine loads for a chosen draft on disk; None for none or an offer to download."""
    option = choice.option if choice else None
    if choice is None or option is None or option.path is None:
        return None
    return DraftLoad(option.path, choice.n_ctx, -1 if choice.on_gpu else 0, choice.kv_type, choice.on_gpu)


def with_fewer_layers(request: LoadRequest, info: ModelInfo) -> LoadRequest | None:
    """The same load with one GPU layer fewer (and no draft model: the memory was short), or None when it ran
    on the CPU already."""
    if request.n_gpu_layers == 0:
        return None
    layers = info.block_count + 1 if request.n_gpu_layers < 0 else request.n_gpu_layers
    return dataclasses.replace(request, n_gpu_layers=layers - 1, draft=None)
