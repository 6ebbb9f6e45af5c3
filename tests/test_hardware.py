"""Hardware detection: llama.cpp's own view, and faithful stand-ins for the GPUs this machine lacks."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from qwen_chat.system.hardware import (
    Device,
    GiB,
    amd_sysfs_devices,
    apple_unified_device,
    detect,
    llama_cpp_devices,
    nvml_devices,
)


class FakeNVML:
    """The calls nvidia-ml-py makes, answering like a driver with the given cards."""

    def __init__(self, cards: list[tuple[str, int, int]], fail_init: bool = False) -> None:
        self.cards, self.fail_init, self.shut = cards, fail_init, False

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shut = True

    def nvmlDeviceGetCount(self) -> int:
        return len(self.cards)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return self.cards[handle][0].encode()

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        _, total, free = self.cards[handle]
        return SimpleNamespace(total=total, free=free, used=total - free)


CARDS = [("NVIDIA GeForce RTX 4090", 24 * GiB, 23 * GiB), ("NVIDIA GeForce RTX 3060", 12 * GiB, 11 * GiB)]


def test_llama_cpp_reports_this_cpu_build() -> None:
    gpus, offload, backend = llama_cpp_devices()
    assert gpus == () and offload is False and "CPU" in backend


def test_nvml_devices_and_cuda_visible_devices() -> None:
    nvml = FakeNVML(CARDS)
    both = nvml_devices(nvml, env={})
    assert [(d.description, d.total_bytes, d.free_bytes) for d in both] == [
        ("NVIDIA GeForce RTX 4090", 24 * GiB, 23 * GiB), ("NVIDIA GeForce RTX 3060", 12 * GiB, 11 * GiB)]
    assert nvml.shut
    only_second = nvml_devices(FakeNVML(CARDS), env={"CUDA_VISIBLE_DEVICES": "1"})
    assert [d.description for d in only_second] == ["NVIDIA GeForce RTX 3060"]
    assert nvml_devices(FakeNVML(CARDS), env={"CUDA_VISIBLE_DEVICES": ""}) == ()
    assert nvml_devices(FakeNVML(CARDS), env={"CUDA_VISIBLE_DEVICES": "1,0"})[0].description.endswith("3060")
    assert nvml_devices(FakeNVML(CARDS, fail_init=True), env={}) == ()  # no driver: no GPU, no crash


def test_amd_sysfs(tmp_path: Path) -> None:
    for name, vendor, total, used in (("card0", "0x1002", 16 * GiB, 2 * GiB), ("card1", "0x10de", 8 * GiB, 0),
                                      ("card2", "0x1002", 512 << 20, 0)):
        dev = tmp_path / name / "device"
        dev.mkdir(parents=True)
        (dev / "vendor").write_text(vendor + "\n")
        (dev / "mem_info_vram_total").write_text(str(total))
        (dev / "mem_info_vram_used").write_text(str(used))
    (gpu,) = amd_sysfs_devices(tmp_path)  # the NVIDIA card and the small APU carve-out are skipped
    assert (gpu.vendor, gpu.total_bytes, gpu.free_bytes) == ("amd", 16 * GiB, 14 * GiB)
    assert amd_sysfs_devices(tmp_path / "missing") == ()


def test_apple_unified_memory_rule() -> None:
    (small,) = apple_unified_device(16 * GiB, 12 * GiB, machine="arm64", system="darwin")
    assert small.unified and small.total_bytes == int(16 * GiB * 0.67) and small.free_bytes == small.total_bytes
    (big,) = apple_unified_device(128 * GiB, 100 * GiB, machine="arm64", system="darwin")
    assert big.total_bytes == 96 * GiB
    assert apple_unified_device(16 * GiB, 12 * GiB, machine="x86_64", system="darwin") == ()
    assert apple_unified_device(16 * GiB, 12 * GiB, machine="arm64", system="linux") == ()


def test_gpu_found_but_cpu_only_build_warns_with_the_fix() -> None:
    card = Device("CUDA0", "NVIDIA GeForce RTX 4090", "gpu", 23 * GiB, 24 * GiB, "nvidia")
    machine = detect(llama=lambda: ((), False, "CPU"), nvml=lambda: (card,), amd=lambda: (), apple=lambda t, a: ())
    assert machine.gpus == (card,) and machine.gpu_free == 0  # unusable until rebuilt
    (warning,) = machine.warnings
    assert "built without GPU support" in warning and 'CMAKE_ARGS="-DGGML_CUDA=on"' in warning
    assert "llama-cpp-python==0.3.36" in warning


def test_llama_cpp_view_wins_and_no_warning_when_it_sees_the_gpu() -> None:
    card = Device("CUDA0", "NVIDIA GeForce RTX 4090", "gpu", 23 * GiB, 24 * GiB, "nvidia")
    machine = detect(llama=lambda: ((card,), True, "CUDA0, CPU"), nvml=lambda: (), amd=lambda: (),
                     apple=lambda t, a: ())
    assert machine.gpu_free == 23 * GiB and machine.warnings == () and machine.source == "llama.cpp"
    assert detect().ram_available > 0  # the real machine, end to end
