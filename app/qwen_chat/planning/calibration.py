"""This machine's effective speeds (speed.DeviceRate): measured once by `qwen-chat calibrate` (speed_probe.py)
and kept in the data folder, else guessed from the hardware and labelled "estimated, not measured".

The file (`speed-calibration.json`) maps a machine fingerprint (CPU model, cores and threads, RAM size, GPU
names and sizes) to the measured rates; a different fingerprint (a new GPU, more RAM, the data folder on
another machine) finds nothing and falls back to the guesses until the probe runs again, which replaces it.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from qwen_chat.planning.speed import UNKNOWN_GPU, DeviceRate, Rates
from qwen_chat.system.hardware import Device, Machine
from qwen_chat.system.paths import data_dir

GB = 1e9
# CPU guesses, a little below what the probe measured on a 2-core AMD EPYC VM (20-25 GB/s, 110 and 40 GFLOP/s
# per core): 12 GB/s of effective bandwidth per core, at most 60 GB/s (about two channels of DDR5 as llama.cpp
# reads them); 60 GFLOP/s per core for quantized matrix products, 20 for attention.
CPU_GB_S_PER_CORE, CPU_GB_S_CAP = 12.0, 60.0
CPU_GFLOPS_PER_CORE, CPU_ATTENTION_GFLOPS_PER_CORE = 60.0, 20.0
APPLE_GB_S = 100.0  # the base M2/M3's unified memory; Pro and Max chips have 2-4x (no chip name to tell them by)
# Vendors' peak (TB/s, dense fp16 TFLOPS) and the kind of card (GPU_KINDS), matched by name, most specific first.
GPU_TABLE: tuple[tuple[str, float, float, str], ...] = (
    ("GH200", 4.0, 989, "hopper"), ("H200", 4.8, 989, "hopper"), ("H100 PCIe", 2.0, 756, "hopper"),
    ("H100", 3.35, 989, "hopper"), ("A100-PCIE-40GB", 1.56, 312, "hbm"), ("A100", 2.0, 312, "hbm"),
    ("L40S", 0.864, 362, "pc"), ("L40", 0.864, 181, "pc"), ("A6000", 0.768, 155, "pc"), ("L4", 0.3, 121, "pc"),
    ("A10", 0.6, 125, "pc"), ("V100", 0.9, 125, "hbm"), ("T4", 0.32, 65, "pc"), ("RTX 5090", 1.79, 210, "pc"),
    ("RTX 4090", 1.0, 165, "pc"), ("RTX 4080", 0.717, 97, "pc"), ("RTX 4070 Ti", 0.504, 80, "pc"),
    ("RTX 4070", 0.504, 58, "pc"), ("RTX 4060", 0.272, 30, "pc"), ("RTX 3090", 0.936, 71, "pc"),
    ("RTX 3080", 0.76, 59, "pc"), ("RTX 3070", 0.448, 40, "pc"), ("RTX 3060", 0.36, 25, "pc"),
    ("MI300X", 5.3, 1307, "hopper"), ("MI250", 3.2, 362, "hbm"), ("7900 XTX", 0.96, 123, "pc"),
    ("7900 XT", 0.8, 103, "pc"),
)
# What llama.cpp makes of those peaks. Public figures (llama.cpp PRs, llama-bench tables; numbers only):
#  - RTX 3090, llama 8B Q4_0, micro-batch 1: 155 t/s (PR #15802): 4.35 GB per token, so over 70% of the
#    936 GB/s even with no fixed cost at all: 80% of the bandwidth, and what is left is ~30 us per layer.
#  - RTX 4090, Qwen3-8B Q4_K_M ~135 t/s and Qwen3-30B-A3B Q4_K_M ~196 t/s (public guides; RTX 3090 Ti 167 t/s
#    at 4K): 4.7 GB and 1.9 GB read per token; fitted with 80% of 1 TB/s: 30 us per layer, 20 us more per MoE
#    layer, 0.4 ms per token (the sampler over 151,936 logits on the CPU, synchronisation, the graph's launch).
#  - RTX 4090, llama 8B Q4_K_S pp2048 9,279 t/s and Q4_0 pp512 10,359 t/s (PRs #7860, #7676): ~140 of its
#    165 TFLOPS; quantized products run on int8 tensor cores, hence 80% on consumer cards.
#  - Datacenter cards run the same small kernels at lower clocks over more SMs: an A100 matched an H100 on
#    Llama-2-7B Q4_K_M decode (71 vs 66 t/s, issue #4747) and qwen3next 80B.A3B decodes at ~104 t/s on two
#    RTX 3090s: fixed costs, not bandwidth, decide. 80 us per layer and 50 per MoE layer put the H200 where
#    public figures of this class of card are (Qwen3-8B 150-250, 30B-A3B low hundreds) -- an estimate until
#    `qwen-chat calibrate --gpu` measures them there.
#  - Hopper's 989 TFLOPS are wgmma's; llama.cpp's quantized kernels use mma.sync: ~20% of it. A100 F16 7B
#    pp512 8,381 t/s (PR #6017) is ~35% of its 312.
#  - MoE prefill: qwen3next 80B.A3B pp512 ~1,741 t/s on an RTX PRO 6000 Blackwell: with 512 experts and 10 used
#    an expert sees 10 tokens of a 512 batch; expert products reach the dense rate at ~256 tokens (T).
#  - Prompt batches of 32 tokens or more multiply RAM-resident weights on the GPU (op offload): they cross PCIe
#    4.0 x16 (31.5 GB/s raw) at ~25 GB/s, PCIe 5.0 at twice that (U).
# kind: (per-layer, per-MoE-layer, per-token decode seconds, per-layer batch seconds, prefill FLOPs share, T, U);
# "pc" consumer and workstation cards, "hbm" datacenter cards, "hopper" those whose peak (Hopper, MI300X) counts
# instructions llama.cpp's quantized kernels do not use
GPU_KINDS: dict[str, tuple[float, float, float, float, float, float, float]] = {
    "pc": (30e-6, 20e-6, 0.4e-3, 50e-6, 0.8, 256, 25e9),
    "hbm": (80e-6, 50e-6, 0.4e-3, 100e-6, 0.35, 256, 25e9),
    "hopper": (80e-6, 50e-6, 0.4e-3, 100e-6, 0.2, 256, 50e9),
}
GPU_BANDWIDTH_EFFICIENCY, GPU_ATTENTION_SHARE = 0.8, 0.05
BANDWIDTH_EFFICIENCY, FLOPS_EFFICIENCY = 0.7, 0.4  # Apple's unified memory (CPU and GPU) and its GPU
_FILE = "speed-calibration.json"


def _path() -> Path:
    return data_dir() / _FILE


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else what platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def fingerprint(machine: Machine, cpu: str | None = None) -> str:
    """What the speeds depend on; free memory is left out (it changes from minute to minute)."""
    gpus = ",".join(f"{d.description}:{d.total_bytes >> 30}G" for d in machine.gpus) or "no GPU"
    return (f"{cpu or cpu_name()}|{machine.physical_cores}c/{machine.logical_cores}t|"
            f"{round(machine.ram_total / (1 << 30))}G RAM|{gpus}")


# ---- guesses from the hardware ------------------------------------------------------------------------------


def default_cpu(machine: Machine, threads: int) -> DeviceRate:
    threads = max(1, min(threads, machine.physical_cores))
    if machine.unified_memory:  # Apple Silicon: the CPU cores read the same fast unified memory
        bandwidth = APPLE_GB_S * GB * BANDWIDTH_EFFICIENCY * min(1.0, threads / 4)
    else:
        bandwidth = min(CPU_GB_S_PER_CORE * threads, CPU_GB_S_CAP) * GB
    return DeviceRate(bandwidth, CPU_GFLOPS_PER_CORE * threads * GB, CPU_ATTENTION_GFLOPS_PER_CORE * threads * GB)


def default_gpu(device: Device) -> DeviceRate:
    if device.vendor == "apple":  # Metal: the unified memory's figure, a consumer card's fixed costs
        return replace(_with_kind(0.0, 10e12, "pc"), bandwidth=APPLE_GB_S * GB * BANDWIDTH_EFFICIENCY,
                       flops=10e12 * FLOPS_EFFICIENCY, upload_bandwidth=0.0)  # one memory: nothing to copy
    text = f"{device.description} {device.name}".upper()
    for name, tb_s, tflops, kind in GPU_TABLE:
        if name.upper() in text:
            return _with_kind(tb_s * 1e12, tflops * 1e12, kind)
    return UNKNOWN_GPU


def _with_kind(peak_bandwidth: float, peak_flops: float, kind: str) -> DeviceRate:
    layer, moe, token, batch_layer, flops_share, tile, upload = GPU_KINDS[kind]
    return DeviceRate(peak_bandwidth * GPU_BANDWIDTH_EFFICIENCY, peak_flops * flops_share,
                      peak_flops * GPU_ATTENTION_SHARE, layer_seconds=layer, moe_layer_seconds=moe,
                      token_seconds=token, batch_layer_seconds=batch_layer, expert_batch_tokens=tile,
                      upload_bandwidth=upload)


# ---- the stored measurements --------------------------------------------------------------------------------


def _read() -> dict[str, Any]:
    try:
        data = json.loads(_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


_FIXED_COSTS = ("layer_seconds", "moe_layer_seconds", "token_seconds", "batch_layer_seconds", "expert_batch_tokens",
                "upload_bandwidth")


def _rate(entry: Any) -> DeviceRate | None:
    """A stored rate; files from before the fixed costs lack them, and they load as 0."""
    try:
        extra = {name: float(entry.get(name, 0.0)) for name in _FIXED_COSTS}
        return DeviceRate(float(entry["bandwidth"]), float(entry["flops"]), float(entry["attention_flops"]),
                          measured=True, **extra)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def _gpu_rate(entry: Any) -> DeviceRate | None:
    """The stored GPU rate, or None for one measured before the fixed costs were: its bandwidth absorbed them for
    the probe's model only, so the table's guess predicts other models better."""
    if not isinstance(entry, dict) or "layer_seconds" not in entry:
        return None
    return _rate(entry)


def stored(machine: Machine, cpu: str | None = None) -> dict[str, Any] | None:
    """This machine's entry, or None when none was measured under its current fingerprint."""
    entry = _read().get(fingerprint(machine, cpu))
    return entry if isinstance(entry, dict) else None


def store(machine: Machine, cpu_rates: dict[int, DeviceRate], gpu: DeviceRate | None = None,
          probe_model: str = "", cpu: str | None = None) -> Path:
    """Replace what is stored for this machine; entries under other fingerprints are dropped, as a data folder
    is one machine's (a copied one must not keep another machine's figures)."""
    entry: dict[str, Any] = {
        "cpu": {str(t): _plain(r) for t, r in sorted(cpu_rates.items())},
        "model": probe_model,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if gpu is not None:
        entry["gpu"] = _plain(gpu)
    path = _path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({fingerprint(machine, cpu): entry}, indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _plain(rate: DeviceRate) -> dict[str, float]:
    data = asdict(rate)
    data.pop("measured")
    return data


def rates_for(machine: Machine, threads: int | None = None, cpu: str | None = None) -> Rates:
    """The rates the predictor uses at `threads` (default: the physical cores, as the engine does)."""
    threads = threads or machine.physical_cores
    entry = stored(machine, cpu) or {}
    measured = {int(t): r for t, v in (entry.get("cpu") or {}).items()
                if str(t).isdigit() and (r := _rate(v)) is not None}
    cpu_rate = measured.get(threads) or _nearest(measured, threads) or default_cpu(machine, threads)
    gpus = machine.gpus if machine.gpu_offload else ()
    gpu = _gpu_rate(entry.get("gpu")) if gpus else None
    if gpus and gpu is None:
        gpu = min((default_gpu(d) for d in gpus), key=lambda r: r.bandwidth)
    return Rates(cpu_rate, gpu, threads)


def _nearest(measured: dict[int, DeviceRate], threads: int) -> DeviceRate | None:
    """A thread count that was not probed: the closest one, its FLOP/s scaled by the thread ratio (compute
    grows with the cores), its bandwidth kept (a few cores already take most of what memory gives)."""
    if not measured:
        return None
    near = min(measured, key=lambda t: (abs(t - threads), -t))
    rate, scale = measured[near], threads / near
    return replace(rate, bandwidth=rate.bandwidth * min(1.0, scale), flops=rate.flops * scale,
                   attention_flops=rate.attention_flops * scale)
