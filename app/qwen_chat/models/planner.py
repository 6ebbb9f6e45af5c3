"""The memory-fit planner: which quant, how many layers on the GPU, which MoE experts on the CPU, KV cache
type, flash attention, context size and YaRN, with the predicted bytes and the reason for each choice.

Sizes come from the GGUF tensor table when the file (or its header) is at hand, from the catalog otherwise.
Formulas (reference/memory-fit.md): KV = 2·L·ctx·n_kv·head_dim·bytes, head_dim from `attention.key_length`;
compute buffer ≈ 4·n_ubatch·n_vocab bytes (measured within 2% on this machine, see bench/plan_accuracy.py).
Order of preference: quality quants fully on the GPU; for MoE, experts on the CPU before a lower quant; for
dense models, a smaller quant fully on the GPU before partial offload; the CPU last.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from qwen_chat.models.catalog import CatalogModel, Quant
from qwen_chat.models.gguf_files import ModelInfo
from qwen_chat.models.gguf_header import GGUFHeader
from qwen_chat.system.hardware import Machine

MiB = 1 << 20
GiB = 1 << 30
UBATCH = 512
CTX_STEP = 256
MIN_CTX = 2048
DEFAULT_CTX_CAP = 40960  # Qwen3's GGUF context (32K output + 8K prompt); longer only when asked
GPU_MARGIN = 1 * GiB  # per device, as llama.cpp's own --fit leaves
KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32}
GGML_TYPE = {"f16": 1, "q8_0": 8}
_REPACKED = {2, 12, 20}  # ggml Q4_0, Q4_K, IQ4_NL: repacked by the x86/ARM CPU backend
_EXPERTS = re.compile(r"\.ffn_(up|down|gate|gate_up)_(ch|)exps")
_BLOCK = re.compile(r"^blk\.(\d+)\.")


class DoesNotFit(Exception):
    """Nothing fits; the message names what is needed and what is available."""


@dataclass(frozen=True)
class Weights:
    """Byte sizes of one quant's tensors, grouped the way llama.cpp places them."""

    layer_dense: tuple[int, ...]  # per block: attention, norms, router, shared FFN
    layer_experts: tuple[int, ...]  # per block: routed expert tensors (0 for dense models)
    output: int  # output head (+ norm); for a tied model, the copy of token_embd llama.cpp gives the GPU
    embed: int  # token_embd: llama.cpp keeps it on the CPU
    exact: bool  # from a GGUF tensor table, not estimated
    tied: bool = False  # no output.weight in the file: the head reuses token_embd
    # Tensors the CPU backend copies into its repacked layout (Q4_0, Q4_K, IQ4_NL). llama.cpp lists this
    # "CPU_REPACK" buffer beside the mapped file; the mapped pages it replaces become reclaimable cache,
    # so RAM budgets count the weights once and this only matters for matching llama.cpp's own report.
    repack: int = 0

    @property
    def total(self) -> int:
        """Bytes of the file's tensors (what a CPU-only load maps)."""
        layers = sum(self.layer_dense) + sum(self.layer_experts)
        return layers + self.embed + (0 if self.tied else self.output)

    @property
    def cpu_model_buffers(self) -> int:
        """What llama.cpp reports as model buffers for a CPU load: the mapped file plus the repacked copies."""
        return self.total + self.repack


@dataclass(frozen=True)
class Arch:
    layers: int
    kv_heads: int
    key_length: int
    value_length: int
    n_vocab: int
    n_head: int
    gguf_context: int  # positions the GGUF was trained/configured for
    native_context: int  # base for YaRN
    yarn_factors: tuple[int, ...] = ()
    is_moe: bool = False
    kv_layers: int | None = None  # layers that keep a KV cache, when not all do (Qwen3-Next)

    def kv_bytes(self, n_ctx: int, kv_type: str, layers: int | None = None) -> int:
        """KV cache bytes for all layers, or for `layers` of them (a share of the cached ones)."""
        per_layer = self.kv_heads * (self.key_length + self.value_length) * KV_BYTES[kv_type]
        cached = self.layers if self.kv_layers is None else self.kv_layers
        share = cached if layers is None else cached * layers / self.layers
        return int(n_ctx * per_layer * share)


@dataclass(frozen=True)
class Candidate:
    quant: str
    weights: Weights


@dataclass(frozen=True)
class Plan:
    quant: str
    n_ctx: int
    n_gpu_layers: int  # -1 all, 0 none
    n_cpu_moe: int  # experts of blocks 0..n-1 stay on the CPU
    kv_type: str
    flash_attn: bool
    yarn_factor: int  # 0: no rope scaling
    gpu_bytes: int
    ram_bytes: int
    gpu_budget: int
    ram_budget: int
    weights_exact: bool
    reasons: tuple[str, ...] = field(default=())

    @property
    def mode(self) -> str:
        if self.n_gpu_layers == 0:
            return "cpu"
        return "gpu" if self.n_gpu_layers < 0 and self.n_cpu_moe == 0 else "partial"

    @property
    def verdict(self) -> str:
        return {"gpu": "runs fully on GPU", "partial": "runs partly on GPU", "cpu": "CPU only"}[self.mode]

    def short(self, layers_loaded: int | None = None) -> str:
        """For a status bar: where the model runs and the memory it takes."""
        n_gpu = self.n_gpu_layers if layers_loaded is None else layers_loaded
        if n_gpu == 0:
            return f"CPU · RAM {gib(self.ram_bytes)}"
        where = "GPU all layers" if n_gpu < 0 else f"GPU {n_gpu} layers"
        if self.n_cpu_moe:
            where += f", {self.n_cpu_moe} layers' experts in RAM"
        return f"{where} · {gib(self.gpu_bytes)} GPU + {gib(self.ram_bytes)} RAM"

    def describe(self) -> str:
        layers = {"gpu": "all layers on the GPU", "cpu": "no GPU layers"}.get(
            self.mode, f"{self.n_gpu_layers if self.n_gpu_layers >= 0 else 'all'} layers on the GPU")
        moe = f", experts of the first {self.n_cpu_moe} layers on the CPU" if self.n_cpu_moe else ""
        yarn = f", YaRN ×{self.yarn_factor}" if self.yarn_factor else ""
        return (f"{self.quant}: context {self.n_ctx:,}{yarn}, {layers}{moe}, KV cache {self.kv_type}"
                f"{', flash attention' if self.flash_attn else ''}; GPU {gib(self.gpu_bytes)} of {gib(self.gpu_budget)}"
                f", RAM {gib(self.ram_bytes)} of {gib(self.ram_budget)}")


def gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


# ---- weights from a GGUF header or from the catalog -----------------------------------------------------


def weights_from_headers(headers: Sequence[GGUFHeader], layers: int) -> Weights:
    dense, experts = [0] * layers, [0] * layers
    output = embed = repack = 0
    has_output = False
    for header in headers:
        for tensor in header.tensors:
            size = tensor.n_bytes
            if tensor.ggml_type in _REPACKED and len(tensor.shape) == 2 and tensor.shape[1] % 8 == 0:
                repack += size
            block = _BLOCK.match(tensor.name)
            if block and int(block[1]) < layers:
                target = experts if _EXPERTS.search(tensor.name) else dense
                target[int(block[1])] += size
            elif tensor.name == "token_embd.weight":
                embed += size
            else:
                has_output = has_output or tensor.name == "output.weight"
                output += size
    if not has_output:
        output += embed  # tied embeddings: llama.cpp puts a copy of token_embd in the output layer
    return Weights(tuple(dense), tuple(experts), output, embed, exact=True, tied=not has_output, repack=repack)


def weights_estimate(total: int, layers: int, embed: int, tied: bool, expert_share: float) -> Weights:
    """Spread a file size over its tensors when only the size is known (catalog entries)."""
    output = embed
    body = max(0, total - embed - (0 if tied else output))
    per_layer = body // max(1, layers)
    experts = int(per_layer * expert_share)
    return Weights((per_layer - experts,) * layers, (experts,) * layers, output, embed, exact=False, tied=tied)


# ---- budgets and placements -----------------------------------------------------------------------------


def budgets(machine: Machine) -> tuple[int, int]:
    gpus = machine.gpus if machine.gpu_offload else ()
    gpu = sum(max(0, d.free_bytes - GPU_MARGIN) for d in gpus)
    if len(gpus) > 1:  # whole layers per device: keep half a gigabyte more on each for the split
        gpu -= (len(gpus) - 1) * GiB // 2
    ram = machine.ram_available - max(GiB, machine.ram_total // 20)
    return max(0, gpu), max(0, ram)


def compute_bytes(arch: Arch, n_ctx: int = 0, flash_attn: bool = True) -> int:
    """The compute buffer's peak: the f32 logits of a micro-batch or, without flash attention, the f32
    attention scores plus the mask (ubatch × ctx × (heads + 1)) if larger; ggml reuses one region for both.
    Fitted on llama.cpp's reports here: 302 / 489 / 969 MiB at 4K / 16K / 32K (bench/plan_accuracy.py)."""
    logits = 4 * UBATCH * arch.n_vocab
    scores = 0 if flash_attn else 4 * UBATCH * n_ctx * (arch.n_head + 1)
    return max(logits, scores) + 8 * MiB


@dataclass(frozen=True)
class _Fit:
    gpu: int
    ram: int


def _full_gpu(arch: Arch, w: Weights, ctx: int, kv: str) -> _Fit:
    gpu = sum(w.layer_dense) + sum(w.layer_experts) + w.output + arch.kv_bytes(ctx, kv) + compute_bytes(arch)
    return _Fit(gpu, w.embed + compute_bytes(arch) // 8)


def _experts_on_cpu(arch: Arch, w: Weights, ctx: int, kv: str, n_cpu: int) -> _Fit:
    gpu = (sum(w.layer_dense) + sum(w.layer_experts[n_cpu:]) + w.output + arch.kv_bytes(ctx, kv)
           + compute_bytes(arch))
    return _Fit(gpu, sum(w.layer_experts[:n_cpu]) + w.embed + compute_bytes(arch))


def _partial_dense(arch: Arch, w: Weights, ctx: int, kv: str, n_gpu: int) -> _Fit:
    """The last n_gpu blocks (and the output layer) on the GPU, like llama.cpp's -ngl."""
    gpu_layers = range(arch.layers - n_gpu, arch.layers)
    on_gpu = sum(w.layer_dense[i] + w.layer_experts[i] for i in gpu_layers) + w.output
    gpu = on_gpu + arch.kv_bytes(ctx, kv, n_gpu) + compute_bytes(arch)
    in_file_on_gpu = on_gpu - (w.output if w.tied else 0)  # a tied head's GPU copy is not taken from RAM
    ram = w.total - in_file_on_gpu + arch.kv_bytes(ctx, kv, arch.layers - n_gpu) + compute_bytes(arch)
    return _Fit(gpu, ram)


def _cpu(arch: Arch, w: Weights, ctx: int, kv: str) -> _Fit:
    return _Fit(0, w.total + arch.kv_bytes(ctx, kv) + compute_bytes(arch, ctx, flash_attn=False))


def context_ladder(arch: Arch, requested: int | None) -> list[int]:
    if requested is not None:
        return [requested]
    top = min(arch.gguf_context, DEFAULT_CTX_CAP)
    ladder = [top]
    while ladder[-1] > 8192:
        ladder.append(max(8192, ladder[-1] // 2 // CTX_STEP * CTX_STEP))
    return ladder + [c for c in (4096, MIN_CTX) if c < ladder[-1]]


def yarn_factor(arch: Arch, ctx: int) -> int:
    if ctx <= arch.gguf_context:
        return 0
    for factor in sorted(arch.yarn_factors):
        if arch.native_context * factor >= ctx:
            return factor
    limit = max([arch.gguf_context] + [arch.native_context * f for f in arch.yarn_factors])
    raise DoesNotFit(f"this model supports at most {limit:,} tokens of context"
                     f"{' with YaRN' if arch.yarn_factors else ''}; {ctx:,} was asked")


QUALITY_FLOOR = "Q4_K_M"  # below it a quant loses noticeably; MoE offload comes first


def _split_by_quality(candidates: Sequence[Candidate]) -> tuple[list[Candidate], list[Candidate]]:
    ordered = sorted(candidates, key=lambda c: c.weights.total, reverse=True)
    floor = next((c.weights.total for c in ordered if c.quant.upper() == QUALITY_FLOOR), None)
    if floor is None:
        return ordered, []
    return [c for c in ordered if c.weights.total >= floor], [c for c in ordered if c.weights.total < floor]


def plan(arch: Arch, candidates: Sequence[Candidate], machine: Machine, requested_ctx: int | None = None) -> Plan:
    if not candidates:
        raise DoesNotFit("no file to plan for")
    gpu_budget, ram_budget = budgets(machine)
    unified = machine.unified_memory
    good, low = _split_by_quality(candidates)
    # q8_0 rows hold blocks of 32 values: a head size that is not a multiple cannot use it
    kv_types = ("f16", "q8_0") if arch.key_length % 32 == 0 and arch.value_length % 32 == 0 else ("f16",)
    ladder = context_ladder(arch, requested_ctx)
    for ctx in ladder:
        yarn_factor(arch, ctx)  # refuse impossible contexts early, with the limit named

    def make(c: Candidate, ctx: int, kv: str, fit: _Fit, n_gpu: int, n_cpu_moe: int, why: str) -> Plan:
        if requested_ctx:
            note = " as asked"
        else:
            note = "" if ctx == ladder[0] else f" (the default {ladder[0]:,} does not fit)"
        reasons = [why, f"context {ctx:,}{note}"]
        factor = yarn_factor(arch, ctx)
        if factor:
            reasons.append(f"YaRN factor {factor} over the native {arch.native_context:,} (yarn_orig_ctx)")
        if kv != "f16":
            reasons.append("KV cache q8_0 (half the memory of f16) to fit; needs flash attention")
        return Plan(c.quant, ctx, n_gpu, n_cpu_moe, kv, kv != "f16" or n_gpu != 0, factor, fit.gpu, fit.ram,
                    gpu_budget, ram_budget, c.weights.exact, tuple(reasons))

    def ok(fit: _Fit) -> bool:
        # unified memory (Apple): the GPU's share comes out of the same RAM
        return fit.gpu <= gpu_budget and fit.ram + (fit.gpu if unified else 0) <= ram_budget

    def gpu_attempts(quants: list[Candidate]) -> Plan | None:
        for ctx in ladder:
            for c in quants:
                for kv in kv_types:
                    fit = _full_gpu(arch, c.weights, ctx, kv)
                    if ok(fit):
                        return make(c, ctx, kv, fit, -1, 0, f"{c.quant} is the best quant that fits fully on the GPU")
            if arch.is_moe:
                # experts in RAM run at CPU speed: the smallest quality quant keeps the most of them on the GPU
                for c in sorted(quants, key=lambda c: c.weights.total):
                    for kv in kv_types:
                        found = _moe_offload(c, ctx, kv)
                        if found:
                            return found
        return None

    def _moe_offload(c: Candidate, ctx: int, kv: str) -> Plan | None:
        for n_cpu in range(1, arch.layers + 1):
            fit = _experts_on_cpu(arch, c.weights, ctx, kv, n_cpu)
            if fit.gpu <= gpu_budget:
                if ok(fit):
                    return make(c, ctx, kv, fit, -1, n_cpu,
                                f"{c.quant} with the experts of {n_cpu} of {arch.layers} layers in RAM keeps "
                                "quality; the attention and the rest run on the GPU")
                return None
        return None

    def dense_partial() -> Plan | None:
        choice = next((c for c in reversed(good)), None) or (low[0] if low else None)
        if choice is None:
            return None
        for ctx in ladder:
            for kv in kv_types:
                for n_gpu in range(arch.layers, 0, -1):
                    fit = _partial_dense(arch, choice.weights, ctx, kv, n_gpu)
                    if fit.gpu <= gpu_budget:
                        if ok(fit):
                            return make(choice, ctx, kv, fit, n_gpu, 0,
                                        f"{choice.quant} does not fit the GPU; {n_gpu} of {arch.layers} layers "
                                        "go there, the rest run on the CPU")
                        break
        return None

    if gpu_budget > 0:
        found = gpu_attempts(good) or gpu_attempts(low) or (None if arch.is_moe else dense_partial())
        if found:
            return found
    cpu_order = _cpu_preference(good, low)
    for ctx in ladder:
        for c in cpu_order:
            fit = _cpu(arch, c.weights, ctx, "f16")
            if fit.ram <= ram_budget:
                why = (f"{c.quant} on the CPU" + (" (no usable GPU)" if gpu_budget == 0 else " (too big for the GPU)"))
                return make(c, ctx, "f16", fit, 0, 0, why)
    smallest = min(candidates, key=lambda c: c.weights.total)
    need = _cpu(arch, smallest.weights, ladder[-1], "f16").ram
    raise DoesNotFit(
        f"even {smallest.quant} with a {ladder[-1]:,}-token context needs about {gib(need)}, but "
        f"{gib(ram_budget)} of RAM" + (f" and {gib(gpu_budget)} of GPU memory" if gpu_budget else "")
        + " is free for it. Choose a smaller model, or close other programs.")


def _cpu_preference(good: list[Candidate], low: list[Candidate]) -> list[Candidate]:
    """On the CPU speed follows file size: Q4_K_M first, then larger, then lower quants."""
    by_size = sorted(good, key=lambda c: c.weights.total)
    return by_size + low


def kv_type_id(kv_type: str) -> int:
    return GGML_TYPE[kv_type]



# ---- inputs from a file on disk -------------------------------------------------------------------------


def arch_from_info(info: ModelInfo, yarn_factors: tuple[int, ...] = (), native_context: int | None = None) -> Arch:
    """A GGUF on disk. Qwen3 hybrid GGUFs say 40,960; YaRN applies only from the catalog's native 32,768."""
    return Arch(
        layers=info.block_count,
        kv_heads=info.head_count_kv,
        key_length=info.key_length,
        value_length=info.value_length,
        n_vocab=info.n_vocab or 151936,
        n_head=info.head_count,
        gguf_context=info.context_length,
        native_context=native_context or info.context_length,
        yarn_factors=yarn_factors,
        is_moe=info.expert_count > 0,
    )


def candidate_from_info(info: ModelInfo) -> Candidate:
    quant = _QUANT_IN_NAME.search(info.path.name)
    name = quant[1].upper() if quant else info.path.stem
    return Candidate(name, weights_from_headers(info.headers, info.block_count))


_QUANT_IN_NAME = re.compile(r"[-_.]((?:UD-)?(?:I?Q\d[A-Z0-9_]*|F16|BF16|F32))(?:-\d{5}-of-\d{5})?\.gguf$", re.I)


# ---- inputs from the catalog ----------------------------------------------------------------------------

QWEN_VOCAB = 151936


def arch_from_catalog(model: CatalogModel) -> Arch:
    return Arch(
        layers=model.layers, kv_heads=model.kv_heads, key_length=model.head_dim, value_length=model.head_dim,
        n_vocab=QWEN_VOCAB, n_head=model.heads, gguf_context=model.gguf_context, native_context=model.native_context,
        yarn_factors=model.yarn_factors, is_moe=model.is_moe, kv_layers=model.kv_layers)


def candidates_from_catalog(model: CatalogModel, quant: Quant | None = None) -> list[Candidate]:
    return [Candidate(q.name, weights_from_catalog(model, q)) for q in ([quant] if quant else model.quants.values())]


def weights_from_catalog(model: CatalogModel, quant: Quant) -> Weights:
    bytes_per_param = quant.size / model.params
    embed_params = QWEN_VOCAB * model.hidden
    tied = not model.is_moe and model.params < 5_000_000_000  # Qwen3 0.6B/1.7B/4B tie their embeddings
    share = 0.0
    if model.is_moe and model.active_params and model.experts > model.experts_used:
        per_expert = (model.params - model.active_params) / (model.layers * (model.experts - model.experts_used))
        layer_params = (model.params - embed_params * 2) / model.layers
        share = min(0.99, model.experts * per_expert / layer_params)
    return weights_estimate(quant.size, model.layers, int(embed_params * bytes_per_param), tied, share)
