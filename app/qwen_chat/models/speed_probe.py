"""The calibration probe: a short llama.cpp run on a GGUF whose sizes are known, turned into this machine's
effective rates (speed.DeviceRate) by inverting speed.py's formula.

One run at a thread count: a 256-token prompt into an empty cache (-> matrix FLOP/s), then 32 single-token
decode steps there and 32 more after filling the cache to 1,024 tokens. The two decode depths give two
equations  t = (W + KV(ctx)) / B + A(ctx) / Fa  for the two unknowns B (bandwidth) and Fa (attention FLOP/s).
Per-token times are the lower quartile of the steps: other programs on the machine only ever slow steps down.
The difference between the depths is small (~10%) and noise can swamp it: an attention rate outside
[F/20, F] is not believed, and the measured ratio ATTENTION_RATIO stands in for it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qwen_chat.models.speed import DeviceRate, Workload, kv_bytes, weights_touched
from qwen_chat.system.hardware import Machine

PROMPT_TOKENS, DEEP_CTX, DECODE_TOKENS = 256, 1024, 32
# attention FLOP/s over matrix FLOP/s, from quiet probes here (AMD EPYC, 1 thread: 51 / 114 GFLOP/s)
ATTENTION_RATIO = 0.45


@dataclass(frozen=True)
class ProbeRun:
    """What one probe measured: prompt throughput, and seconds per decoded token at two cache depths."""

    threads: int
    prompt_tokens: int
    prompt_seconds: float
    shallow: tuple[float, float]  # (mean context while decoding, median seconds per token)
    deep: tuple[float, float]


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
        vocab = llm.n_vocab()
        tokens = [(i * 7919) % (vocab - 1000) + 500 for i in range(DEEP_CTX)]  # ordinary ids, no specials
        llm.eval(tokens[:8])  # warm up: first-touch page faults and thread start-up are not speed
        llm.reset()
        started = clock()
        llm.eval(tokens[:PROMPT_TOKENS])
        prompt_seconds = clock() - started
        shallow = _decode(llm, tokens, PROMPT_TOKENS, clock)
        llm.n_tokens = PROMPT_TOKENS  # the decoded steps are overwritten by the rest of the prompt
        llm.eval(tokens[PROMPT_TOKENS:DEEP_CTX])
        deep = _decode(llm, tokens, DEEP_CTX, clock)
    finally:
        llm.close()
    return ProbeRun(threads, PROMPT_TOKENS, prompt_seconds, shallow, deep)


def _decode(llm: object, tokens: list[int], depth: int, clock: Callable[[], float]) -> tuple[float, float]:
    steps = []
    for i in range(DECODE_TOKENS):
        started = clock()
        llm.eval([tokens[i]])  # type: ignore[attr-defined]  # a llama_cpp.Llama
        steps.append(clock() - started)
    return depth + DECODE_TOKENS / 2, statistics.quantiles(steps, n=4)[0]


def calibrate(model: Path, machine: Machine, gpu: bool = False, probe: Callable[[Path, int, int], ProbeRun] = run_probe,
              ) -> tuple[dict[int, DeviceRate], DeviceRate | None]:
    """Probe at one thread and at every physical core (what the engine uses), on the CPU; with `gpu`, once more
    with every layer on the GPU. Stores the result for this machine (calibration.py) and returns it."""
    from qwen_chat.models import calibration
    from qwen_chat.models.gguf_files import read_model_info
    from qwen_chat.models.speed import workload_from_gguf

    work = workload_from_gguf(read_model_info(model))
    counts = sorted({1, machine.physical_cores})
    cpu = {threads: derive(probe(model, threads, 0), work) for threads in counts}
    gpu_rate = derive(probe(model, machine.physical_cores, -1), work) if gpu else None
    calibration.store(machine, cpu, gpu_rate, probe_model=model.name)
    return cpu, gpu_rate
