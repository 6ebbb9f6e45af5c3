"""What the machine has: RAM and CPU cores (psutil), and GPUs as llama.cpp itself sees them.

llama.cpp's backend device list reports free and total memory for every device it was built to use (CUDA,
Metal, Vulkan, ROCm); the functions are exported by the shared library though llama-cpp-python does not
wrap them, so they are declared here with ctypes.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import psutil

# enum ggml_backend_dev_type
_DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel"}


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    kind: str  # "cpu" | "gpu" | "igpu" | "accel"
    free_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class Machine:
    ram_total: int
    ram_available: int
    physical_cores: int
    logical_cores: int
    gpus: tuple[Device, ...]
    gpu_offload: bool  # llama-cpp-python was built with a GPU backend

    @property
    def gpu_free(self) -> int:
        return sum(d.free_bytes for d in self.gpus)


def _ggml_devices() -> tuple[tuple[Device, ...], bool]:
    try:
        import llama_cpp
    except ImportError:  # an engine that is not installed has no devices
        return (), False
    lib = llama_cpp.llama_cpp._lib
    try:
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
    except AttributeError:  # a llama.cpp build without the device API
        return (), bool(llama_cpp.llama_supports_gpu_offload())
    llama_cpp.llama_backend_init()
    devices = []
    for index in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(index)
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        kind = _DEVICE_TYPES.get(lib.ggml_backend_dev_type(dev), "unknown")
        if kind == "cpu":
            continue
        devices.append(Device(
            name=(lib.ggml_backend_dev_name(dev) or b"").decode(errors="replace"),
            description=(lib.ggml_backend_dev_description(dev) or b"").decode(errors="replace"),
            kind=kind, free_bytes=free.value, total_bytes=total.value))
    return tuple(devices), bool(llama_cpp.llama_supports_gpu_offload())


def detect() -> Machine:
    memory = psutil.virtual_memory()
    gpus, offload = _ggml_devices()
    logical = psutil.cpu_count() or 1
    return Machine(
        ram_total=memory.total,
        ram_available=memory.available,
        physical_cores=psutil.cpu_count(logical=False) or logical,
        logical_cores=logical,
        gpus=gpus,
        gpu_offload=offload,
    )
