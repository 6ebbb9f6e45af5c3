"""Expected speed of a model under a memory plan: decode and prompt tokens per second. Pure arithmetic.

Decode is memory-bound: each generated token reads once every weight it touches, plus the KV cache so far.
Per device d (the CPU, the GPU), for one token with `ctx` tokens in the cache:

    t_d = max((W_d + KV_d(ctx)) / B_d,  2·P_d / F_d)  +  A_d(ctx) / Fa_d  +  L_d·c_d + M_d·m_d + s_d
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
L_d·c_d + M_d·m_d + s_d  the fixed costs a bandwidth-only model leaves out, which decide a fast GPU's speed: c_d
      per layer on d (a layer is some 25 graph nodes: kernel launches, each a few microseconds however little
      it reads), m_d more per MoE layer whose experts run on d (router, top-k, the expert dispatch), s_d once per
      token when d takes part (graph launch, synchronisation, the logits' copy and the sampler on the CPU).
      The CPU's are 0: its measured rates already hold them, and its time is the weights' reading.

Prefill runs in micro-batches of n = PROMPT_BATCH tokens; per device and batch

    t_d(n) = max(2n·(Pd'_d / F_d + Pe'_d / Fe_d(n)),  Wb_d / B_d)  +  L_d·b_d
    prompt tok/s = n / Σ_d t_d(n)      for a prompt into an empty cache

Pd', Pe' the dense and the active routed-expert parameters without the output head (llama.cpp computes logits
for the last prompt token only); Wb the weights one batch reads (a batch of 512 touches nearly every expert);
b_d a fixed cost per layer and batch. Fe_d(n) = F_d·min(1, n·experts_used/experts / T_d): an expert sees only
its share of the batch's tokens, and a quantized product of fewer than T_d tokens leaves the GPU's tiles part
empty (T_d = 0: no such loss, the CPU's case). With the fixed costs 0 and T 0 (a CPU) this is 2·P'/F per token.
When a plan uses the GPU, a batch of OP_OFFLOAD_BATCH tokens or more does its RAM-resident layers' products on
the GPU too (llama.cpp's op offload): their weights cross to it at U (PCIe), t_cpu = Wb_cpu / U + t at the GPU's
rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from qwen_chat.catalog.entries import CatalogModel, Quant
from qwen_chat.gguf.files import ModelInfo
from qwen_chat.gguf.kv_types import KV_BYTES
from qwen_chat.planning.plan_inputs import weights_from_catalog, weights_from_headers
from qwen_chat.planning.planner import Plan, Weights

DISPLAY_CTX = 2048  # the context the tables quote speeds at: a few turns of conversation
PROMPT_BATCH = 512  # llama.cpp's micro-batch (the engine's n_batch and n_ubatch): a prompt runs in these
OP_OFFLOAD_BATCH = 32  # from this many tokens on, llama.cpp multiplies RAM-resident weights on the GPU


@dataclass(frozen=True)
class DeviceRate:
    bandwidth: float  # bytes/s at which a decode step reads the weights
    flops: float  # FLOP/s of batched matrix products (prompt processing)
    attention_flops: float  # FLOP/s of one token's attention over the cache
    measured: bool = False
    # the fixed costs of the module docstring (0 for a CPU); stored by `calibrate --gpu` beside the three above
    layer_seconds: float = 0.0  # c: per layer per decoded token
    moe_layer_seconds: float = 0.0  # m: more per MoE layer whose experts run here, per token
    token_seconds: float = 0.0  # s: per token when this device takes part
    batch_layer_seconds: float = 0.0  # b: per layer per prompt micro-batch
    expert_batch_tokens: float = 0.0  # T: tokens an expert needs in a batch for its products to reach `flops`
    upload_bandwidth: float = 0.0  # U: host-to-device bytes/s of llama.cpp's op offload (0: none, a CPU's)


# A GPU nothing is known about (calibration.py's table has the known ones, and the public figures behind these
# fixed costs): a mid-range card's ~300 GB/s and 20 TFLOPS, with a consumer card's fixed costs.
UNKNOWN_GPU = DeviceRate(bandwidth=0.3e12 * 0.8, flops=20e12 * 0.8, attention_flops=20e12 * 0.05,
                         layer_seconds=30e-6, moe_layer_seconds=20e-6, token_seconds=0.4e-3,
                         batch_layer_seconds=50e-6, expert_batch_tokens=256, upload_bandwidth=25e9)


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
    layers: int = 0  # blocks run here
    moe_layers: int = 0  # blocks whose routed experts run here
    expert_bytes: float = 0.0  # the active routed-expert part of prefill_bytes
    batch_bytes: float = 0.0  # weights one prompt micro-batch reads here (all the experts it touches)


@dataclass(frozen=True)
class Estimate:
    decode: float  # tokens/s at `ctx`
    prompt: float  # tokens/s
    ctx: int
    measured: bool
    bytes_per_token: int  # weights and KV read per generated token, all devices
    compute_bound: bool  # some device's decode is limited by FLOPs, not by reading memory
    fixed_share: float = 0.0  # of a token's time, the fixed costs (a fast GPU's kernel launches, the sampler)

    def short(self) -> str:
        """For a table cell: "~12 tok/s"."""
        return f"~{_figure(self.decode)} tok/s"

    def describe(self, rates: Rates) -> str:
        how = "measured on this machine" if self.measured else "estimated, not measured (qwen-chat calibrate)"
        bound = "compute-bound" if self.compute_bound else "memory-bound"
        if self.fixed_share > 0.5:
            bound = f"{self.fixed_share:.0%} of it fixed per-layer and per-token costs"
        return (f"decode ~{_figure(self.decode)} tok/s at {self.ctx:,} tokens of context "
                f"({self.bytes_per_token / 1e9:.2f} GB read per token, {bound}), "
                f"prompt ~{_figure(self.prompt)} tok/s; {rates.threads} CPU thread{'' if rates.threads == 1 else 's'}; "
                f"{how}")


def _figure(rate: float) -> str:
    return f"{rate:.1f}" if rate < 10 else f"{rate:.0f}"


def placement(work: Workload, plan: Plan) -> tuple[Load, Load]:
    """(CPU, GPU) shares of one token under the plan's -ngl / --n-cpu-moe."""
    w, layers = work.weights, len(work.weights.layer_dense)
    n_gpu = layers if plan.n_gpu_layers < 0 else min(plan.n_gpu_layers, layers)
    # per device: [weights read, active expert bytes, layers, MoE layers, batch bytes]
    cpu, gpu = [0.0, 0.0, 0, 0, 0.0], [0.0, 0.0, 0, 0, 0.0]
    touched = 1 - (1 - work.expert_fraction) ** PROMPT_BATCH  # share of the experts a batch's tokens route to
    for i in range(layers):
        here = gpu if i >= layers - n_gpu else cpu
        experts_here = cpu if here is gpu and i < plan.n_cpu_moe else here
        experts = w.layer_experts[i] * work.expert_fraction
        here[0] += w.layer_dense[i]
        here[2] += 1
        here[4] += w.layer_dense[i]
        experts_here[0] += experts
        experts_here[1] += experts
        experts_here[4] += w.layer_experts[i] * touched
        experts_here[3] += bool(w.layer_experts[i])
    head_on_gpu = n_gpu > 0
    share = n_gpu / layers if layers else 0.0
    cpu_load = Load(cpu[0] + (0 if head_on_gpu else w.output), cpu[0], 1 - share, int(cpu[2]), int(cpu[3]),
                    cpu[1], cpu[4])
    gpu_load = Load(gpu[0] + (w.output if head_on_gpu else 0), gpu[0], share, int(gpu[2]), int(gpu[3]),
                    gpu[1], gpu[4])
    return cpu_load, gpu_load


def _decode_seconds(work: Workload, load: Load, rate: DeviceRate, ctx: int, kv_type: str,
                    ) -> tuple[float, bool, float]:
    """(seconds, compute-bound, of them the fixed costs) of one decoded token on this device."""
    if load.weight_bytes == 0 and load.kv_share == 0:
        return 0.0, False, 0.0
    kv = ctx * work.kv_elements_per_layer * KV_BYTES[kv_type] * work.kv_layers * load.kv_share
    memory = (load.weight_bytes + kv) / rate.bandwidth
    compute = 2 * load.weight_bytes / work.bytes_per_param / rate.flops
    attention = ctx * work.attention_flops_per_layer * work.kv_layers * load.kv_share / rate.attention_flops
    fixed = load.layers * rate.layer_seconds + load.moe_layers * rate.moe_layer_seconds + rate.token_seconds
    return max(memory, compute) + attention + fixed, compute > memory, fixed


def _batch_seconds(work: Workload, load: Load, rate: DeviceRate, n: int = PROMPT_BATCH) -> float:
    """One prompt micro-batch of `n` tokens on this device (the module docstring's t_d(n))."""
    if not load.prefill_bytes:
        return 0.0
    expert_rate = rate.flops
    if rate.expert_batch_tokens and load.expert_bytes:
        expert_rate *= min(1.0, n * work.expert_fraction / rate.expert_batch_tokens)
    dense = load.prefill_bytes - load.expert_bytes
    compute = 2 * n * (dense / rate.flops + load.expert_bytes / expert_rate) / work.bytes_per_param
    return max(compute, load.batch_bytes / rate.bandwidth) + load.layers * rate.batch_layer_seconds


def kv_bytes(work: Workload, ctx: int, kv_type: str = "f16") -> float:
    return ctx * work.kv_elements_per_layer * KV_BYTES[kv_type] * work.kv_layers


def prompt_batch_seconds(work: Workload, plan: Plan, rates: Rates, n: int = PROMPT_BATCH) -> float:
    """Seconds of one prompt micro-batch of `n` tokens into an empty cache, all devices (module docstring)."""
    cpu_load, gpu_load = placement(work, plan)
    gpu_rate = rates.gpu or UNKNOWN_GPU
    cpu_s = _batch_seconds(work, cpu_load, rates.cpu, n)
    if plan.n_gpu_layers != 0 and n >= OP_OFFLOAD_BATCH and gpu_rate.upload_bandwidth and cpu_load.prefill_bytes:
        # llama.cpp's op offload: the batch copies the weights it reads in RAM to the GPU and multiplies there
        on_gpu = replace(cpu_load, batch_bytes=0.0)
        cpu_s = cpu_load.batch_bytes / gpu_rate.upload_bandwidth + _batch_seconds(work, on_gpu, gpu_rate, n)
    return cpu_s + _batch_seconds(work, gpu_load, gpu_rate, n)


def predict(work: Workload, plan: Plan, rates: Rates, ctx: int = DISPLAY_CTX) -> Estimate:
    """The formula of the module docstring. A plan that uses the GPU on rates without one gets UNKNOWN_GPU;
    `ctx` is capped at the plan's context."""
    ctx = min(ctx, plan.n_ctx)
    cpu_load, gpu_load = placement(work, plan)
    gpu_rate = rates.gpu or UNKNOWN_GPU
    cpu_s, cpu_bound, cpu_fixed = _decode_seconds(work, cpu_load, rates.cpu, ctx, plan.kv_type)
    gpu_s, gpu_bound, gpu_fixed = _decode_seconds(work, gpu_load, gpu_rate, ctx, plan.kv_type)
    batch_s = prompt_batch_seconds(work, plan, rates)
    total = cpu_load.weight_bytes + gpu_load.weight_bytes + kv_bytes(work, ctx, plan.kv_type)
    uses_gpu = plan.n_gpu_layers != 0
    measured = rates.cpu.measured and (not uses_gpu or (rates.gpu is not None and rates.gpu.measured))
    return Estimate(1 / (cpu_s + gpu_s), PROMPT_BATCH / batch_s if batch_s else math.inf, ctx, measured,
                    int(total), bool(cpu_bound or gpu_bound), (cpu_fixed + gpu_fixed) / (cpu_s + gpu_s))


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
