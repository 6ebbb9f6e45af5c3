"""The memory-fit planner: which quant, how many layers on the GPU, which MoE experts on the CPU, KV cache
type, flash attention, context size and YaRN, with the predicted bytes and the reason for each choice.

Sizes come from the GGUF tensor table when the file (or its header) is at hand, from the catalog otherwise
(plan_inputs.py).
Formulas (reference/memory-fit.md): KV = 2·L·ctx·n_kv·head_dim·bytes, head_dim from `attention.key_length`,
L the layers with a KV cache (hybrid recurrent models: every full_attention_interval-th; their recurrent layers
add a fixed f32 conv + ssm state per sequence, Arch.recurrent_state_bytes);
compute buffer ≈ 4·n_ubatch·n_vocab bytes (measured within 2% on this machine, see bench/plan_accuracy.py).
Order of preference: quality quants fully on the GPU; for MoE, experts on the CPU before a lower quant; for
dense models, a smaller quant fully on the GPU before partial offload; the CPU last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from qwen_chat.gguf.kv_types import KV_BYTES
from qwen_chat.system.hardware import Machine

MiB = 1 << 20
GiB = 1 << 30
UBATCH = 512
CTX_STEP = 256
MIN_CTX = 2048
DEFAULT_CTX_CAP = 40960  # Qwen3's GGUF context (32K output + 8K prompt); longer only when asked
GPU_MARGIN = 1 * GiB  # per device, as llama.cpp's own --fit leaves


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
    kv_layers: int | None = None  # layers that keep a KV cache, when not all do (Qwen3-Next, Qwen3.5)
    # Hybrid recurrent models: the f32 conv + ssm state of all recurrent layers for one sequence (llama.cpp's
    # RS buffer; gguf_files.Recurrence computes it from the ssm.* metadata). Fixed, whatever the context.
    recurrent_state_bytes: int = 0

    def kv_bytes(self, n_ctx: int, kv_type: str, layers: int | None = None) -> int:
        """KV cache bytes for all layers, or for `layers` of them (a share of the cached ones)."""
        per_layer = self.kv_heads * (self.key_length + self.value_length) * KV_BYTES[kv_type]
        cached = self.layers if self.kv_layers is None else self.kv_layers
        share = cached if layers is None else cached * layers / self.layers
        return int(n_ctx * per_layer * share)

    def memory_bytes(self, n_ctx: int, kv_type: str, layers: int | None = None) -> int:
        """llama.cpp's memory module: the KV cache plus the recurrent state, for all layers or a share (llama.cpp
        places both with their layer; the hybrid's layer types alternate evenly, so a share of layers holds that
        share of each)."""
        state = self.recurrent_state_bytes if layers is None else self.recurrent_state_bytes * layers / self.layers
        return self.kv_bytes(n_ctx, kv_type, layers) + int(state)


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
    gpu = sum(w.layer_dense) + sum(w.layer_experts) + w.output + arch.memory_bytes(ctx, kv) + compute_bytes(arch)
    return _Fit(gpu, w.embed + compute_bytes(arch) // 8)


def _experts_on_cpu(arch: Arch, w: Weights, ctx: int, kv: str, n_cpu: int) -> _Fit:
    gpu = (sum(w.layer_dense) + sum(w.layer_experts[n_cpu:]) + w.output + arch.memory_bytes(ctx, kv)
           + compute_bytes(arch))
    return _Fit(gpu, sum(w.layer_experts[:n_cpu]) + w.embed + compute_bytes(arch))


def _partial_dense(arch: Arch, w: Weights, ctx: int, kv: str, n_gpu: int) -> _Fit:
    """The last n_gpu blocks (and the output layer) on the GPU, like llama.cpp's -ngl."""
    gpu_layers = range(arch.layers - n_gpu, arch.layers)
    on_gpu = sum(w.layer_dense[i] + w.layer_experts[i] for i in gpu_layers) + w.output
    gpu = on_gpu + arch.memory_bytes(ctx, kv, n_gpu) + compute_bytes(arch)
    in_file_on_gpu = on_gpu - (w.output if w.tied else 0)  # a tied head's GPU copy is not taken from RAM
    ram = w.total - in_file_on_gpu + arch.memory_bytes(ctx, kv, arch.layers - n_gpu) + compute_bytes(arch)
    return _Fit(gpu, ram)


def _cpu(arch: Arch, w: Weights, ctx: int, kv: str) -> _Fit:
    return _Fit(0, w.total + arch.memory_bytes(ctx, kv) + compute_bytes(arch, ctx, flash_attn=False))


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
    return _Search.on(arch, candidates, machine, requested_ctx).best()


@dataclass(frozen=True)
class _Search:
    """One planning question: the placements to try, in order of preference, against this machine's budgets."""

    arch: Arch
    candidates: Sequence[Candidate]
    requested_ctx: int | None
    gpu_budget: int
    ram_budget: int
    unified: bool  # unified memory (Apple): the GPU's share comes out of the same RAM
    good: list[Candidate]  # quality quants, largest first
    low: list[Candidate]  # below the quality floor, largest first
    kv_types: tuple[str, ...]
    ladder: list[int]  # contexts to try, largest first

    @classmethod
    def on(cls, arch: Arch, candidates: Sequence[Candidate], machine: Machine, requested_ctx: int | None) -> _Search:
        gpu_budget, ram_budget = budgets(machine)
        good, low = _split_by_quality(candidates)
        # q8_0 rows hold blocks of 32 values: a head size that is not a multiple cannot use it
        kv_types = ("f16", "q8_0") if arch.key_length % 32 == 0 and arch.value_length % 32 == 0 else ("f16",)
        ladder = context_ladder(arch, requested_ctx)
        for ctx in ladder:
            yarn_factor(arch, ctx)  # refuse impossible contexts early, with the limit named
        return cls(arch, candidates, requested_ctx, gpu_budget, ram_budget, machine.unified_memory, good, low,
                   kv_types, ladder)

    def best(self) -> Plan:
        if self.gpu_budget > 0:
            found = (self._on_gpu(self.good) or self._on_gpu(self.low)
                     or (None if self.arch.is_moe else self._dense_partial()))
            if found:
                return found
        return self._on_cpu()

    def _fits(self, fit: _Fit) -> bool:
        return fit.gpu <= self.gpu_budget and fit.ram + (fit.gpu if self.unified else 0) <= self.ram_budget

    def _make(self, c: Candidate, ctx: int, kv: str, fit: _Fit, n_gpu: int, n_cpu_moe: int, why: str) -> Plan:
        if self.requested_ctx:
            note = " as asked"
        else:
            note = "" if ctx == self.ladder[0] else f" (the default {self.ladder[0]:,} does not fit)"
        reasons = [why, f"context {ctx:,}{note}"]
        factor = yarn_factor(self.arch, ctx)
        if factor:
            reasons.append(f"YaRN factor {factor} over the native {self.arch.native_context:,} (yarn_orig_ctx)")
        if kv != "f16":
            reasons.append("KV cache q8_0 (half the memory of f16) to fit; needs flash attention")
        return Plan(c.quant, ctx, n_gpu, n_cpu_moe, kv, kv != "f16" or n_gpu != 0, factor, fit.gpu, fit.ram,
                    self.gpu_budget, self.ram_budget, c.weights.exact, tuple(reasons))

    def _on_gpu(self, quants: list[Candidate]) -> Plan | None:
        """The largest context first; at each, a quant fully on the GPU, else (MoE) one with experts in RAM."""
        for ctx in self.ladder:
            found = self._fully_on_gpu(quants, ctx) or (self._experts_in_ram(quants, ctx) if self.arch.is_moe else None)
            if found:
                return found
        return None

    def _fully_on_gpu(self, quants: list[Candidate], ctx: int) -> Plan | None:
        for c in quants:
            for kv in self.kv_types:
                fit = _full_gpu(self.arch, c.weights, ctx, kv)
                if self._fits(fit):
                    return self._make(c, ctx, kv, fit, -1, 0, f"{c.quant} is the best quant that fits fully on the GPU")
        return None

    def _experts_in_ram(self, quants: list[Candidate], ctx: int) -> Plan | None:
        # experts in RAM run at CPU speed: the smallest quality quant keeps the most of them on the GPU
        for c in sorted(quants, key=lambda c: c.weights.total):
            for kv in self.kv_types:
                found = self._fewest_experts_in_ram(c, ctx, kv)
                if found:
                    return found
        return None

    def _fewest_experts_in_ram(self, c: Candidate, ctx: int, kv: str) -> Plan | None:
        """The fewest layers' experts in RAM that let the rest fit the GPU, if RAM then holds them."""
        arch = self.arch
        for n_cpu in range(1, arch.layers + 1):
            fit = _experts_on_cpu(arch, c.weights, ctx, kv, n_cpu)
            if fit.gpu <= self.gpu_budget:
                if self._fits(fit):
                    return self._make(c, ctx, kv, fit, -1, n_cpu,
                                      f"{c.quant} with the experts of {n_cpu} of {arch.layers} layers in RAM keeps "
                                      "quality; the attention and the rest run on the GPU")
                return None
        return None

    def _dense_partial(self) -> Plan | None:
        arch = self.arch
        choice = next((c for c in reversed(self.good)), None) or (self.low[0] if self.low else None)
        if choice is None:
            return None
        for ctx in self.ladder:
            for kv in self.kv_types:
                for n_gpu in range(arch.layers, 0, -1):
                    fit = _partial_dense(arch, choice.weights, ctx, kv, n_gpu)
                    if fit.gpu <= self.gpu_budget:
                        if self._fits(fit):
                            return self._make(choice, ctx, kv, fit, n_gpu, 0,
                                              f"{choice.quant} does not fit the GPU; {n_gpu} of {arch.layers} layers "
                                              "go there, the rest run on the CPU")
                        break
        return None

    def _on_cpu(self) -> Plan:
        for ctx in self.ladder:
            for c in _cpu_preference(self.good, self.low):
                fit = _cpu(self.arch, c.weights, ctx, "f16")
                if fit.ram <= self.ram_budget:
                    why = (f"{c.quant} on the CPU"
                           + (" (no usable GPU)" if self.gpu_budget == 0 else " (too big for the GPU)"))
                    return self._make(c, ctx, "f16", fit, 0, 0, why)
        smallest = min(self.candidates, key=lambda c: c.weights.total)
        need = _cpu(self.arch, smallest.weights, self.ladder[-1], "f16").ram
        raise DoesNotFit(
            f"even {smallest.quant} with a {self.ladder[-1]:,}-token context needs about {gib(need)}, but "
            f"{gib(self.ram_budget)} of RAM" + (f" and {gib(self.gpu_budget)} of GPU memory" if self.gpu_budget else "")
            + " is free for it. Choose a smaller model, or close other programs.")


def _cpu_preference(good: list[Candidate], low: list[Candidate]) -> list[Candidate]:
    """On the CPU speed follows file size: Q4_K_M first, then larger, then lower quants."""
    by_size = sorted(good, key=lambda c: c.weights.total)
    return by_size + low
