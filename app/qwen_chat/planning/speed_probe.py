"""The calibration probe: a short llama.cpp run on a GGUF whose sizes are known, turned into this machine's
effective rates (speed.DeviceRate) by inverting speed.py's formula.

CPU, one run per thread count: a 256-token prompt into an empty cache (-> matrix FLOP/s), then 32 single-token
decode steps there and 32 more after filling the cache to 1,024 tokens. The two decode depths give two
equations  t = (W + KV(ctx)) / B + A(ctx) / Fa  for the two unknowns B (bandwidth) and Fa (attention FLOP/s).
Per-token times are the lower quartile of the steps: other programs on the machine only ever slow steps down.
For the same reason each measurement is repeated REPEATS times within one load and the best kept; a wide
spread between the repeats (BUSY_SPREAD), or other programs using the CPU before the probe starts (psutil),
is reported as a busy machine: the figures are then likely low, and calibrate says to run it again.
The difference between the depths is small (~10%) and noise can swamp it: an attention rate outside
[F/20, F] is not believed, and the measured ratio ATTENTION_RATIO stands in for it.

GPU (`calibrate --gpu`), every layer on the GPU: on a fast GPU a token's time is mostly fixed costs (speed.py),
so the run separates them from the bandwidth. Decode steps with and without logits read the same graph but for
the output head: their difference, less the logits' copy to the CPU, is the head's bytes over B. What is left
of a step without logits, less its weights and cache over B, is the fixed cost; one model cannot tell a
per-layer cost from a per-token one, so the per-token part is the sampler, timed on its own, and the rest is
counted per layer (for an MoE model split between layers and MoE layers as the defaults are). The deeper
steps give the attention rate; prompt batches of two sizes give the matrix FLOP/s and the fixed cost per layer
and batch. A figure the run cannot pin down (a difference lost in noise) keeps the hardware's guess.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

from qwen_chat.planning.speed import PROMPT_BATCH, DeviceRate, Workload, kv_bytes, weights_touched
from qwen_chat.system.hardware import Machine

PROMPT_TOKENS, DEEP_CTX, DECODE_TOKENS = 256, 1024, 32
REPEATS = 3  # short runs of each measurement in one load; the best is kept
BUSY_SPREAD = 0.25  # the slowest repeat this much slower than the best: something else ran meanwhile
BUSY_CPU_SHARE = 0.2  # of all the cores, used by other programs just before the probe
SMALL_BATCH = 128  # the GPU probe's second prompt batch (the first is PROMPT_BATCH)
# attention FLOP/s over matrix FLOP/s, from quiet probes here (AMD EPYC, 1 thread: 51 / 114 GFLOP/s)
ATTENTION_RATIO = 0.45


@dataclass(frozen=True)
class ProbeRun:
    """What one probe measured: prompt throughput, and seconds per decoded token at two cache depths."""

    threads: int
    prompt_tokens: int
    prompt_seconds: float
    shallow: tuple[float, float]  # (mean context while decoding, lower-quartile seconds per token)
    deep: tuple[float, float]
    spread: float = 0.0  # the slowest repeat over the best, less 1, of the measure that varied most


class Calibration(NamedTuple):
    cpu: dict[int, DeviceRate]  # per thread count
    gpu: DeviceRate | None
    busy: str = ""  # why the machine looked busy during the probe, "" when it did not


def derive(run: ProbeRun, work: Workload, kv_type: str = "f16") -> DeviceRate:
    """The rates that make speed.py's formula reproduce the run (see the module docstring)."""
    weights = weights_touched(work.weights, work.expert_fraction)
    prefill_params = (weights - work.weights.output) / work.bytes_per_param
    flops = 2 * prefill_params * run.prompt_tokens / run.prompt_seconds
    (c1, t1), (c2, t2) = run.shallow, run.deep
    m1, m2 = weights + kv_bytes(work, round(c1), kv_type), weights + kv_bytes(work, round(c2), kv_type)
    a1, a2 = (c * work.attention_flops_per_layer * work.kv_layers for c in (c1, c2))
    det = m1 * a2 - m2 * a1
    inv_b, inv_fa = (t1 * a2 - t2 * a1) / det, (m1 * t2 - m2 * t1) / det
    if inv_b <= 0 or not flops / 20 <= 1 / max(inv_fa, 1e-30) <= flops:  # noise: see the module docstring
        inv_fa = 1 / (flops * ATTENTION_RATIO)
        inv_b = (t1 - a1 * inv_fa) / m1 if t1 > a1 * inv_fa else t1 / m1
    return DeviceRate(1 / inv_b, flops, 1 / inv_fa, measured=True)


def run_probe(model: Path, threads: int, n_gpu_layers: int = 0, clock: Callable[[], float] = time.perf_counter,
              ) -> ProbeRun:
    """Load `model` with llama.cpp (no sampling: the steps feed fixed token ids) and time it."""
    import llama_cpp

    llm = llama_cpp.Llama(str(model), n_ctx=DEEP_CTX + DECODE_TOKENS + 64, n_threads=threads,
                          n_threads_batch=threads, n_batch=512, n_gpu_layers=n_gpu_layers, verbose=False)
    try:
        tokens = probe_tokens(llm.n_vocab())  # ordinary ids, no specials
        llm.eval(tokens[:8])  # warm up: first-touch page faults and thread start-up are not speed
        prompts = [_batch_time(llm, tokens[:PROMPT_TOKENS], clock, repeats=1) for _ in range(REPEATS)]
        shallow = [_decode(llm, tokens, PROMPT_TOKENS, clock) for _ in range(REPEATS)]
        llm.n_tokens = PROMPT_TOKENS  # the decoded steps are overwritten by the rest of the prompt
        llm.eval(tokens[PROMPT_TOKENS:DEEP_CTX])
        deep = [_decode(llm, tokens, DEEP_CTX, clock) for _ in range(REPEATS)]
    finally:
        llm.close()
    spread = max(_spread(prompts), _spread([t for _, t in shallow]), _spread([t for _, t in deep]))
    return ProbeRun(threads, PROMPT_TOKENS, min(prompts), min(shallow, key=lambda s: s[1]),
                    min(deep, key=lambda s: s[1]), spread)


def probe_tokens(vocab: int) -> list[int]:
    """DEEP_CTX ordinary token ids, away from both ends of the vocabulary where the special tokens are (for a
    Qwen vocabulary: 500 to 151,435)."""
    low = min(500, vocab // 4)
    span = max(1, vocab - 2 * low)
    return [(i * 7919) % span + low for i in range(DEEP_CTX)]


def _spread(times: list[float]) -> float:
    return max(times) / min(times) - 1 if times and min(times) > 0 else 0.0


def other_load(sample_seconds: float = 0.5) -> float:
    """The share of all the cores busy while this process waits (other programs' load), 0..1."""
    import psutil

    return psutil.cpu_percent(interval=sample_seconds) / 100


def busy_reason(runs: list[ProbeRun], load: float) -> str:
    """Why the probe's figures may be low, or "" when the machine looked quiet."""
    reasons = []
    if load >= BUSY_CPU_SHARE:
        reasons.append(f"other programs used {load:.0%} of the CPU as the probe started")
    worst = max(runs, key=lambda r: r.spread, default=None)
    if worst is not None and worst.spread >= BUSY_SPREAD:
        reasons.append(f"the repeated runs at {worst.threads} thread{'s' if worst.threads > 1 else ''} differed "
                       f"by {worst.spread:.0%}")
    return "; ".join(reasons)


def _decode(llm: object, tokens: list[int], depth: int, clock: Callable[[], float], logits: bool = True,
            ) -> tuple[float, float]:
    """Lower-quartile seconds of DECODE_TOKENS single-token steps from `depth` on (the cache past it is dropped
    first). Without `logits` no output is asked for, and llama.cpp leaves the output head out of the graph."""
    llm.n_tokens = depth  # type: ignore[attr-defined]  # a llama_cpp.Llama
    llm._ctx.kv_cache_seq_rm(-1, depth, -1)  # type: ignore[attr-defined]
    steps = []
    for i in range(DECODE_TOKENS):
        started = clock()
        if logits:
            llm.eval([tokens[i]])  # type: ignore[attr-defined]
        else:
            batch = llm._batch  # type: ignore[attr-defined]
            batch.set_batch([tokens[i]], n_past=depth + i, logits_all=False)
            batch.batch.logits[0] = False
            llm._ctx.decode(batch)  # type: ignore[attr-defined]
        steps.append(clock() - started)
    llm.n_tokens = depth + DECODE_TOKENS  # type: ignore[attr-defined]
    return depth + DECODE_TOKENS / 2, statistics.quantiles(steps, n=4)[0]


def calibrate(model: Path, machine: Machine, gpu: bool = False, probe: Callable[[Path, int, int], ProbeRun] = run_probe,
              gpu_probe: Callable[[Path, int], GpuProbeRun] | None = None,
              load: Callable[[], float] = other_load) -> Calibration:
    """Probe at one thread and at every physical core (what the engine uses), on the CPU, each the best of
    REPEATS short runs; with `gpu`, once more with every layer on the GPU (run_gpu_probe). Stores the result
    for this machine (calibration.py) and returns it, with why the machine looked busy if it did."""
    from qwen_chat.gguf.files import read_model_info
    from qwen_chat.planning import calibration
    from qwen_chat.planning.speed import workload_from_gguf

    work = workload_from_gguf(read_model_info(model))
    counts = sorted({1, machine.physical_cores})
    others = load()
    runs = [probe(model, threads, 0) for threads in counts]
    cpu = {run.threads: derive(run, work) for run in runs}
    gpu_rate = None
    if gpu:
        base = min((calibration.default_gpu(d) for d in machine.gpus), key=lambda r: r.bandwidth,
                   default=calibration.UNKNOWN_GPU)
        gpu_rate = derive_gpu((gpu_probe or run_gpu_probe)(model, machine.physical_cores), work, base)
    calibration.store(machine, cpu, gpu_rate, probe_model=model.name)
    return Calibration(cpu, gpu_rate, busy_reason(runs, others))


# ---- the GPU probe: fixed costs and bandwidth -------------------------------------------------------------


@dataclass(frozen=True)
class GpuProbeRun:
    """Seconds per prompt batch at two sizes, per decode step at two depths and without logits, per sample."""

    batches: tuple[tuple[int, float], tuple[int, float]]  # (tokens, seconds) into an empty cache
    shallow: tuple[float, float]  # (mean context, seconds per step), logits of each step computed
    no_logits: tuple[float, float]  # the same steps asking for no logits: llama.cpp skips the output head
    deep: tuple[float, float]
    sampler_seconds: float  # one sampling step over the vocabulary, on the CPU
    vocab: int = 0  # logits per step: their copy to the CPU is the rest of what a step with logits costs more


def derive_gpu(run: GpuProbeRun, work: Workload, base: DeviceRate) -> DeviceRate:
    """The fixed costs and rates that reproduce the run (module docstring); `base` (the hardware's guess)
    stands in for what the run cannot tell."""
    weights = weights_touched(work.weights, work.expert_fraction)
    layers = len(work.weights.layer_dense)
    moe_layers = sum(1 for e in work.weights.layer_experts if e)
    (c1, t1), (_, t0), (c2, t2) = run.shallow, run.no_logits, run.deep
    head_time = t1 - t0 - (4 * run.vocab / base.upload_bandwidth if base.upload_bandwidth else 0.0)
    bandwidth = work.weights.output / head_time if head_time > 0 else 0.0
    if not 20e9 <= bandwidth <= 20e12:  # a difference lost in noise, or a model without a head of its own
        bandwidth = base.bandwidth
    flops, batch_layer = _prompt_fit(run, work, base, layers)
    attention = ctx_attention = base.attention_flops
    extra_kv = (kv_bytes(work, round(c2)) - kv_bytes(work, round(c1))) / bandwidth
    extra_attention = (c2 - c1) * work.attention_flops_per_layer * work.kv_layers
    if t2 - t1 > extra_kv and extra_attention:
        ctx_attention = extra_attention / (t2 - t1 - extra_kv)
        attention = ctx_attention if flops / 100 <= ctx_attention <= 2 * flops else attention
    reading = (weights - work.weights.output + kv_bytes(work, round(c1))) / bandwidth
    fixed = max(0.0, t0 - reading - c1 * work.attention_flops_per_layer * work.kv_layers / attention)
    share = base.moe_layer_seconds / base.layer_seconds if base.layer_seconds else 0.0
    layer = fixed / (layers + moe_layers * share) if layers else 0.0
    return replace(base, bandwidth=bandwidth, flops=flops, attention_flops=attention, measured=True,
                   layer_seconds=layer, moe_layer_seconds=layer * share, token_seconds=run.sampler_seconds,
                   batch_layer_seconds=batch_layer)


def _prompt_fit(run: GpuProbeRun, work: Workload, base: DeviceRate, layers: int) -> tuple[float, float]:
    """(FLOP/s, seconds per layer and batch) from  t(n) = L·b + g(n)/F  at the two batch sizes, g(n) the
    batch's FLOPs with the experts' share slowed as speed.py's Fe(n) does."""
    expert = sum(work.weights.layer_experts) * work.expert_fraction / work.bytes_per_param
    dense = (weights_touched(work.weights, work.expert_fraction) - work.weights.output) / work.bytes_per_param
    dense -= expert

    def flops_of(n: int) -> float:
        slow = min(1.0, n * work.expert_fraction / base.expert_batch_tokens) if base.expert_batch_tokens else 1.0
        return 2 * n * (dense + (expert / slow if expert else 0.0))

    (n1, s1), (n2, s2) = run.batches
    g1, g2 = flops_of(n1), flops_of(n2)
    inv_flops = (s2 - s1) / (g2 - g1) if g2 != g1 else 0.0
    if inv_flops <= 0:  # noise: the larger batch was not slower; all of it is the FLOPs
        return g2 / s2, 0.0
    batch_layer = max(0.0, s2 - g2 * inv_flops) / layers if layers else 0.0
    return 1 / inv_flops, batch_layer


def run_gpu_probe(model: Path, threads: int, n_gpu_layers: int = -1, clock: Callable[[], float] = time.perf_counter,
                  ) -> GpuProbeRun:
    """Load `model` with every layer on the GPU and flash attention (as GPU plans load) and time it."""
    import llama_cpp

    llm = llama_cpp.Llama(str(model), n_ctx=DEEP_CTX + DECODE_TOKENS + 64, n_threads=threads,
                          n_threads_batch=threads, n_batch=PROMPT_BATCH, n_gpu_layers=n_gpu_layers,
                          flash_attn=True, verbose=False)
    try:
        vocab = llm.n_vocab()
        tokens = probe_tokens(vocab)
        llm.eval(tokens[:8])  # warm up
        small = (SMALL_BATCH, _batch_time(llm, tokens[:SMALL_BATCH], clock))
        full = (PROMPT_BATCH, _batch_time(llm, tokens[:PROMPT_BATCH], clock))
        llm.reset()
        llm.eval(tokens[:PROMPT_TOKENS])
        shallow = _decode(llm, tokens, PROMPT_TOKENS, clock)
        sampler = _sampler_time(llm, clock)  # while the last step's logits are there
        no_logits = _decode(llm, tokens, PROMPT_TOKENS, clock, logits=False)
        llm.n_tokens = PROMPT_TOKENS
        llm.eval(tokens[PROMPT_TOKENS:DEEP_CTX])
        deep = _decode(llm, tokens, DEEP_CTX, clock)
    finally:
        llm.close()
    return GpuProbeRun((small, full), shallow, no_logits, deep, sampler, vocab)


def _batch_time(llm: object, tokens: list[int], clock: Callable[[], float], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        llm.reset()  # type: ignore[attr-defined]  # a llama_cpp.Llama
        started = clock()
        llm.eval(tokens)  # type: ignore[attr-defined]
        times.append(clock() - started)
    return min(times)


def _sampler_time(llm: object, clock: Callable[[], float]) -> float:
    """One sampling step as the engine's defaults sample (top-k 20, top-p 0.8, temperature 0.7)."""
    times = []
    for _ in range(16):
        started = clock()
        llm.sample(top_k=20, top_p=0.8, min_p=0.0, temp=0.7)  # type: ignore[attr-defined]
        times.append(clock() - started)
    return statistics.median(times)
