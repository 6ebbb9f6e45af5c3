"""What the machine has: RAM and CPU cores, and GPUs as llama.cpp itself sees them, with fallbacks.

Order of trust: llama.cpp's backend device list (the numbers its own `--fit` uses: CUDA, Metal, Vulkan, ROCm),
then NVML for NVIDIA, Linux sysfs for AMD, the unified-memory rule for Apple Silicon. A GPU found only by a
fallback means llama-cpp-python was built without its backend: `Machine.warnings` says how to rebuild.
Missing libraries or drivers mean "no GPU of that kind", never a crash.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from qwen_chat.system.logging_setup import llama_cpp_library

GiB = 1 << 30
# enum ggml_backend_dev_type
_DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel"}
LLAMA_CPP_PIN = "0.3.36"


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    kind: str  # "gpu" | "igpu" | "accel"
    free_bytes: int
    total_bytes: int
    vendor: str = ""  # "nvidia" | "amd" | "apple" | "" (unknown)
    unified: bool = False  # shares system RAM (Apple Silicon, iGPUs)


@dataclass(frozen=True)
class Machine:
    ram_total: int
    ram_available: int
    physical_cores: int
    logical_cores: int
    gpus: tuple[Device, ...]
    gpu_offload: bool  # llama-cpp-python was built with a GPU backend
    backend: str = "CPU"
    source: str = "llama.cpp"  # where the GPU numbers came from
    warnings: tuple[str, ...] = field(default=())

    @property
    def gpu_free(self) -> int:
        return sum(d.free_bytes for d in self.gpus) if self.gpu_offload else 0

    @property
    def unified_memory(self) -> bool:
        return any(d.unified for d in self.gpus)


# ---- llama.cpp's own device list -----------------------------------------------------------------------


def _declare(lib: Any) -> None:
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(lib, name).restype = ctypes.c_char_p
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_memory.argtypes = [
        ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]
    lib.ggml_backend_dev_memory.restype = None


def _vendor_of(name: str, description: str) -> str:
    text = f"{name} {description}".lower()
    for vendor, marks in (("nvidia", ("cuda", "nvidia", "geforce", "rtx", "tesla")),
                          ("amd", ("rocm", "hip", "amd", "radeon")), ("apple", ("metal", "apple"))):
        if any(m in text for m in marks):
            return vendor
    return ""


def llama_cpp_devices() -> tuple[tuple[Device, ...], bool, str]:
    """(GPU devices, built with GPU offload, backend names) as llama.cpp reports them."""
    try:
        llama_cpp = llama_cpp_library()  # llama.cpp's logging routed first: the backends speak at their first call
    except ImportError:
        return (), False, "none (llama-cpp-python is not installed)"
    except (OSError, RuntimeError) as exc:  # installed, but its shared library does not load
        return (), False, f"none (llama-cpp-python's library does not load: {exc})"
    offload = bool(llama_cpp.llama_supports_gpu_offload())
    lib = llama_cpp.llama_cpp._lib
    try:
        _declare(lib)
    except AttributeError:  # a build without the device API
        return (), offload, "GPU" if offload else "CPU"
    llama_cpp.llama_backend_init()
    devices, names = [], []
    for index in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(index)
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        name = (lib.ggml_backend_dev_name(dev) or b"").decode(errors="replace")
        description = (lib.ggml_backend_dev_description(dev) or b"").decode(errors="replace")
        kind = _DEVICE_TYPES.get(lib.ggml_backend_dev_type(dev), "unknown")
        names.append(name)
        if kind == "cpu":
            continue
        vendor = _vendor_of(name, description)
        devices.append(Device(name, description, kind, free.value, total.value, vendor,
                              unified=kind == "igpu" or vendor == "apple"))
    return tuple(devices), offload, ", ".join(names) or "CPU"


# ---- fallbacks ------------------------------------------------------------------------------------------


def _visible(indexes: range, env: dict[str, str]) -> list[int]:
    """CUDA_VISIBLE_DEVICES as llama.cpp's CUDA backend applies it (numeric form; empty hides all)."""
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return list(indexes)
    picked = []
    for part in value.split(","):
        part = part.strip()
        if not part.isdigit():
            break  # CUDA stops at the first invalid entry (UUIDs are not resolved here)
        if int(part) in indexes and int(part) not in picked:
            picked.append(int(part))
    return picked


def nvml_devices(nvml: Any = None, env: dict[str, str] | None = None) -> tuple[Device, ...]:
    """NVIDIA GPUs through NVML (nvidia-ml-py); empty when the library or driver is missing."""
    env = dict(os.environ) if env is None else env
    try:
        if nvml is None:
            import pynvml as nvml  # type: ignore[no-redef]  # the parameter's name, filled in
        nvml.nvmlInit()
    except Exception:  # no package, no driver, no device: all mean "no NVIDIA GPU"
        return ()
    try:
        devices: list[Device] = []
        for index in _visible(range(nvml.nvmlDeviceGetCount()), env):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            name = nvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            devices.append(Device(f"CUDA{len(devices)}", name, "gpu", int(memory.free), int(memory.total), "nvidia"))
        return tuple(devices)
    except Exception:
        return ()
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def amd_sysfs_devices(root: Path = Path("/sys/class/drm")) -> tuple[Device, ...]:
    """AMD GPUs from amdgpu's sysfs files (Linux): dedicated VRAM total and used."""
    devices: list[Device] = []
    for card in sorted(root.glob("card[0-9]*")):
        dev = card / "device"
        total_file, used_file = dev / "mem_info_vram_total", dev / "mem_info_vram_used"
        try:
            if (dev / "vendor").read_text().strip() != "0x1002" or not total_file.is_file():
                continue
            total, used = int(total_file.read_text()), int(used_file.read_text())
        except (OSError, ValueError):
            continue
        if total < 1 * GiB:  # an APU's small carve-out; it shares system RAM instead
            continue
        devices.append(Device(f"ROCm{len(devices)}", f"AMD GPU ({card.name})", "gpu", total - used, total, "amd"))
    return tuple(devices)


def apple_unified_device(ram_total: int, ram_available: int, machine: str | None = None,
                         system: str | None = None) -> tuple[Device, ...]:
    """Apple Silicon: the GPU may wire about 2/3 of RAM up to 36 GB, 3/4 above (Metal's working-set rule)."""
    if (system or sys.platform) != "darwin" or (machine or platform.machine()) != "arm64":
        return ()
    share = 0.67 if ram_total <= 36 * GiB else 0.75
    budget = int(ram_total * share)
    return (Device("Metal", "Apple Silicon GPU (unified memory)", "gpu", min(budget, ram_available), budget,
                   "apple", unified=True),)


# ---- the whole picture ----------------------------------------------------------------------------------

REBUILD = {
    "nvidia": 'CMAKE_ARGS="-DGGML_CUDA=on"',
    "amd": 'CMAKE_ARGS="-DGGML_HIP=on"',
    "apple": 'CMAKE_ARGS="-DGGML_METAL=on"',
}


def rebuild_command(vendor: str) -> str:
    args = REBUILD.get(vendor, 'CMAKE_ARGS="-DGGML_VULKAN=on"')
    return (f"{args} pip install --force-reinstall --no-cache-dir --no-deps llama-cpp-python=={LLAMA_CPP_PIN}"
            "   (with pipx: pipx runpip qwen-chat install ... the same arguments)")


def detect(
    llama: Callable[[], tuple[tuple[Device, ...], bool, str]] = llama_cpp_devices,
    nvml: Callable[[], tuple[Device, ...]] = nvml_devices,
    amd: Callable[[], tuple[Device, ...]] = amd_sysfs_devices,
    apple: Callable[[int, int], tuple[Device, ...]] = apple_unified_device,
) -> Machine:
    memory = psutil.virtual_memory()
    logical = psutil.cpu_count() or 1
    gpus, offload, backend = llama()
    source, warnings = "llama.cpp", []
    if not gpus:
        found = nvml() or amd() or apple(memory.total, memory.available)
        if found:
            gpus, source = found, "fallback"
            if not offload:
                vendor = found[0].vendor
                warnings.append(
                    f"{found[0].description} found, but llama-cpp-python was built without GPU support "
                    f"({backend} only), so everything runs on the CPU. Rebuild it: {rebuild_command(vendor)}")
    return Machine(
        ram_total=memory.total,
        ram_available=memory.available,
        physical_cores=psutil.cpu_count(logical=False) or logical,
        logical_cores=logical,
        gpus=gpus,
        gpu_offload=offload,
        backend=backend,
        source=source,
        warnings=tuple(warnings),
    )
