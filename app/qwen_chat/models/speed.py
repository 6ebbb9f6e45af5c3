"""Expected speed of a model under a memory plan: decode and prompt tokens per second. Pure arithmetic.

Decode is memory-bound: each generated token reads once every weight it touches, plus the KV cache so far.
Per device d (the CPU, the GPU), for one token with `ctx` tokens in the cache:

    t_d = max((W_d + KV_d(ctx)) / B_d,  2·P_d / F_d)  +  A_d(ctx) / Fa_d
    decode tok/s = 1 / Σ_d t_d       (llama.cpp runs the CPU part and the GPU part one after the other)

W_d   weight bytes on d one token reads: for a dense model every block tensor plus the output head; for MoE the
      attention, router and shared tensors plus experts_used/experts of the routed expert tensors. The token
      embedding is a lookup of one row and is left out. The plan says where each sits: -ngl puts the last n
      blocks and the head on the GPU, --n-cpu-moe keeps the experts of the first n blocks in RAM.
KV_d  the K and V bytes of the cached layers on d at ctx tokens (hybrid models: only `kv_layers` keep one).
P_d   the parameters behind W_d (W_d / the file's bytes per parameter): 2·P FLOPs per token.
A_d   attention FLOPs, 4·n_head·head_dim·ctx per cached layer (q·Kᵀ, then the weighted sum of V): on a CPU this
      costs more than reading KV_d does (f16 dot products and the softmax), so it has its own measured rate.
B_d, F_d, Fa_d  effective bandwidth, matrix FLOP/s and attention FLOP/s of d: measured once by a probe
      (speed_probe.py) or guessed from the hardware (calibration.py).

Prefill is compute-bound: prompt tok/s = 1 / Σ_d 2·P'_d / F_d, P' without the output head (llama.cpp computes
logits for the last prompt token only), for a prompt into an empty cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qwen_chat.models.catalog import CatalogModel, Quant
from qwen_chat.models.gguf_files import ModelInfo
from qwen_chat.models.plan_inputs import weights_from_catalog, weights_from_headers
from qwen_chat.models.planner import KV_BYTES, Plan, Weights

DISPLAY_CTX = 2048  # the context the tables quote speeds at: a few turns of conversation


@dataclass(frozen=True)
class DeviceRate:
    bandwidth: float  # bytes/s at which a decode step reads the weights
    flops: float  # FLOP/s of batched matrix products (prompt processing)
    attention_flops: float  # FLOP/s of one token's attention over the cache
    measured: bool = False


# A GPU nothing is known about (calibration.py's table has the known ones): a mid-range card's ~300 GB/s.
UNKNOWN_GPU = DeviceRate(bandwidth=0.3e12 * 0.7, flops=20e12 * 0.4, attention_flops=20e12 * 0.05)


@dataclass(frozen=True)
class Rates:
    """One machine at one thread count. With several GPUs the slowest one stands for all: the layers run on
    them one after another, so a token's time is the same as on one device of that speed."""

    cpu: DeviceRate
    gpu: DeviceRate | None = None
    threads: int = 1

    @property
    def measured(self) -> bool:
        return self.cpu.measured and (self.gpu is None or self.gpu.measured)


@dataclass(frozen=True)
class Workload:
    """What one token costs, whatever the machine."""

    weights: Weights
    expert_fraction: float  # experts_used / experts; 1.0 for a dense model
    bytes_per_param: float  # the file's average
    kv_elements_per_layer: int  # K and V values one token adds to one cached layer: 2·n_kv·head_dim
    kv_layers: int  # layers with a KV cache
    attention_flops_per_layer: int  # per token of context: 4·n_head·head_dim
    active_params: int = 0  # for the explanation only (0: unknown)


@dataclass(frozen=True)
class Load:
    """One device's share of a token."""

    weight_bytes: float
    prefill_bytes: float  # the same without the output head
    kv_share: float  # of the cached layers


@dataclass(frozen=True)
class Estimate:
    decode: float  # tokens/s at `ctx`
    prompt: float  # tokens/s
    ctx: int
    measured: bool
    bytes_per_token: int  # weights and KV read per generated token, all devices
    compute_bound: bool  # some device's decode is limited by FLOPs, not by reading memory

    def short(self) -> str:
        """For a table cell: "~12 tok/s"."""
        return f"~{_figure(self.decode)} tok/s"

    def describe(self, rates: Rates) -> str:
        how = "measured on this machine" if self.measured else "estimated, not measured (qwen-chat calibrate)"
        bound = "compute" if self.compute_bound else "memory"
        return (f"decode ~{_figure(self.decode)} tok/s at {self.ctx:,} tokens of context "
                f"({self.bytes_per_token / 1e9:.2f} GB read per token, {bound}-bound), "
                f"prompt ~{_figure(self.prompt)} tok/s; {rates.threads} CPU threads; {how}")


def _figure(rate: float) -> str:
    return f"{rate:.1f}" if rate < 10 else f"{rate:.0f}"


def placement(work: Workload, plan: Plan) -> tuple[Load, Load]:
    """(CPU, GPU) shares of one token under the plan's -ngl / --n-cpu-moe."""
    w, layers = work.weights, len(work.weights.layer_dense)
    n_gpu = layers if plan.n_gpu_layers < 0 else min(plan.n_gpu_layers, layers)
    cpu = gpu = 0.0
    for i in range(layers):
        on_gpu = i >= layers - n_gpu
        experts = w.layer_experts[i] * work.expert_fraction
        if on_gpu:
            gpu += w.layer_dense[i]
            if i < plan.n_cpu_moe:
                cpu += experts
            else:
                gpu += experts
        else:
            cpu += w.layer_dense[i] + experts
    head_on_gpu = n_gpu > 0
    share = n_gpu / layers if layers else 0.0
    cpu_load = Load(cpu + (0 if head_on_gpu else w.output), cpu, 1 - share)
    gpu_load = Load(gpu + (w.output if head_on_gpu else 0), gpu, share)
    return cpu_load, gpu_load


def _decode_seconds(work: Workload, load: Load, rate: DeviceRate, ctx: int, kv_type: str) -> tuple[float, bool]:
    if load.weight_bytes == 0 and load.kv_share == 0:
        return 0.0, False
    kv = ctx * work.kv_elements_per_layer * KV_BYTES[kv_type] * work.kv_layers * load.kv_share
    memory = (load.weight_bytes + kv) / rate.bandwidth
    compute = 2 * load.weight_bytes / work.bytes_per_param / rate.flops
    attention = ctx * work.attention_flops_per_layer * work.kv_layers * load.kv_share / rate.attention_flops
    return max(memory, compute) + attention, compute > memory


def kv_bytes(work: Workload, ctx: int, kv_type: str = "f16") -> float:
    return ctx * work.kv_elements_per_layer * KV_BYTES[kv_type] * work.kv_layers


def predict(work: Workload, plan: Plan, rates: Rates, ctx: int = DISPLAY_CTX) -> Estimate:
    """The formula of the module docstring. A plan that uses the GPU on rates without one gets UNKNOWN_GPU;
    `ctx` is capped at the plan's context."""
    ctx = min(ctx, plan.n_ctx)
    cpu_load, gpu_load = placement(work, plan)
    gpu_rate = rates.gpu or UNKNOWN_GPU
    cpu_s, cpu_bound = _decode_seconds(work, cpu_load, rates.cpu, ctx, plan.kv_type)
    gpu_s, gpu_bound = _decode_seconds(work, gpu_load, gpu_rate, ctx, plan.kv_type)
    prompt_s = sum(2 * load.prefill_bytes / work.bytes_per_param / rate.flops
                   for load, rate in ((cpu_load, rates.cpu), (gpu_load, gpu_rate)) if load.prefill_bytes)
    total = cpu_load.weight_bytes + gpu_load.weight_bytes + kv_bytes(work, ctx, plan.kv_type)
    uses_gpu = plan.n_gpu_layers != 0
    measured = rates.cpu.measured and (not uses_gpu or (rates.gpu is not None and rates.gpu.measured))
    return Estimate(1 / (cpu_s + gpu_s), 1 / prompt_s if prompt_s else math.inf, ctx, measured, int(total),
                    bool(cpu_bound or gpu_bound))


# ---- workloads from the catalog or a GGUF file --------------------------------------------------------------


def workload_from_catalog(model: CatalogModel, quant: Quant) -> Workload:
    """Sizes as the planner estimates them from the catalog (active_params is None for a dense model)."""
    fraction = model.experts_used / model.experts if model.is_moe and model.active_params else 1.0
    return Workload(weights_from_catalog(model, quant), fraction, quant.size / model.params,
                    2 * model.kv_heads * model.head_dim, model.kv_layers or model.layers,
                    4 * model.heads * model.head_dim, model.active_params or model.params)


def workload_from_gguf(info: ModelInfo) -> Workload:
    """Exact sizes from a GGUF file's tensor table (the probe's model, a user's file)."""
    # an MTP block (Qwen3.5's nextn layer) is not loaded for decoding, so it is not read per token either
    skipped = info.block_count - info.nextn_layers if info.nextn_layers else None
    weights = weights_from_headers(info.headers, info.block_count, skipped_from=skipped)
    params = sum(math.prod(t.shape) for h in info.headers for t in h.tensors)
    meta = info.headers[0].metadata if info.headers else {}
    used = meta.get(f"{info.architecture}.expert_used_count", 0)
    fraction = used / info.expert_count if info.expert_count and isinstance(used, int) and used else 1.0
    active = params if fraction == 1.0 else int(params * weights_touched(weights, fraction) / weights.total)
    head = info.key_length + info.value_length
    return Workload(weights, fraction, weights.total / max(1, params), info.head_count_kv * head,
                    info.kv_layers, 2 * info.head_count * head, active)  # only attention layers keep a KV cache


def weights_touched(weights: Weights, expert_fraction: float) -> float:
    """Weight bytes one generated token reads, wherever they sit."""
    return sum(weights.layer_dense) + expert_fraction * sum(weights.layer_experts) + weights.output
