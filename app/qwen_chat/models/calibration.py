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
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from qwen_chat.models.speed import UNKNOWN_GPU, DeviceRate, Rates
from qwen_chat.system.hardware import Device, Machine
from qwen_chat.system.paths import data_dir

GB = 1e9
# CPU guesses, a little below what the probe measured on a 2-core AMD EPYC VM (20-25 GB/s, 110 and 40 GFLOP/s
# per core): 12 GB/s of effective bandwidth per core, at most 60 GB/s (about two channels of DDR5 as llama.cpp
# reads them); 60 GFLOP/s per core for quantized matrix products, 20 for attention.
CPU_GB_S_PER_CORE, CPU_GB_S_CAP = 12.0, 60.0
CPU_GFLOPS_PER_CORE, CPU_ATTENTION_GFLOPS_PER_CORE = 60.0, 20.0
APPLE_GB_S = 100.0  # the base M2/M3's unified memory; Pro and Max chips have 2-4x (no chip name to tell them by)
# Vendors' peak (TB/s, dense fp16 TFLOPS), matched by name, most specific first. llama.cpp reaches ~70% of the
# bandwidth when decoding and well under half the FLOPs on quantized prefill: the factors below.
GPU_TABLE: tuple[tuple[str, float, float], ...] = (
    ("H200", 4.8, 989), ("H100 PCIe", 2.0, 756), ("H100", 3.35, 989), ("GH200", 4.0, 989),
    ("A100-PCIE-40GB", 1.56, 312), ("A100", 2.0, 312), ("L40S", 0.864, 362), ("L40", 0.864, 181),
    ("A6000", 0.768, 155), ("L4", 0.3, 121), ("A10", 0.6, 125), ("V100", 0.9, 125), ("T4", 0.32, 65),
    ("RTX 5090", 1.79, 210), ("RTX 4090", 1.0, 165), ("RTX 4080", 0.717, 97), ("RTX 4070 Ti", 0.504, 80),
    ("RTX 4070", 0.504, 58), ("RTX 4060", 0.272, 30), ("RTX 3090", 0.936, 71), ("RTX 3080", 0.76, 59),
    ("RTX 3070", 0.448, 40), ("RTX 3060", 0.36, 25), ("MI300X", 5.3, 1307), ("MI250", 3.2, 362),
    ("7900 XTX", 0.96, 123), ("7900 XT", 0.8, 103),
)
BANDWIDTH_EFFICIENCY, FLOPS_EFFICIENCY, GPU_ATTENTION_SHARE = 0.7, 0.4, 0.05
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
    if device.vendor == "apple":
        return DeviceRate(APPLE_GB_S * GB * BANDWIDTH_EFFICIENCY, 10e12 * FLOPS_EFFICIENCY,
                          10e12 * GPU_ATTENTION_SHARE)
    text = f"{device.description} {device.name}".upper()
    for name, tb_s, tflops in GPU_TABLE:
        if name.upper() in text:
            return DeviceRate(tb_s * 1e12 * BANDWIDTH_EFFICIENCY, tflops * 1e12 * FLOPS_EFFICIENCY,
                              tflops * 1e12 * GPU_ATTENTION_SHARE)
    return UNKNOWN_GPU


# ---- the stored measurements --------------------------------------------------------------------------------


def _read() -> dict[str, Any]:
    try:
        data = json.loads(_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _rate(entry: Any) -> DeviceRate | None:
    try:
        return DeviceRate(float(entry["bandwidth"]), float(entry["flops"]), float(entry["attention_flops"]),
                          measured=True)
    except (KeyError, TypeError, ValueError):
        return None


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
    gpu = _rate(entry.get("gpu")) if gpus else None
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
    return DeviceRate(rate.bandwidth * min(1.0, scale), rate.flops * scale, rate.attention_flops * scale,
                      measured=True)
