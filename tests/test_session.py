"""The chat session's load path: the plan reaches llama.cpp, and a failed GPU load retries with fewer layers."""

from __future__ import annotations

import threading
from pathlib import Path

from qwen_chat.engines.llama import Engine
from qwen_chat.engines.protocol import Failed, Loaded, LoadRequest
from qwen_chat.planning import fit_memory
from qwen_chat.session.chat import ChatSession
from qwen_chat.session.events import Notice
from qwen_chat.store.database import Store
from qwen_chat.system.hardware import Device, Machine

GiB = 1 << 30


class GpuThatHolds:
    """Stands in for a GPU (none here): a load with more than `fits` layers fails the way llama.cpp does
    when a buffer allocation runs out of memory; fewer layers load."""

    def __init__(self, fits: int) -> None:
        self.fits = fits
        self.requests: list[LoadRequest] = []
        self.on_event = lambda event: None

    def start(self) -> GpuThatHolds:
        return self

    def load(self, request: LoadRequest) -> None:
        self.requests.append(request)
        layers = 10**6 if request.n_gpu_layers < 0 else request.n_gpu_layers
        if layers > self.fits:
            self.on_event(Failed(None, "llama.cpp could not load the model (failed to allocate CUDA0 buffer)"))
        else:
            self.on_event(Loaded(request.model_path, request.n_ctx, request.n_gpu_layers, 0.1))

    def shutdown(self) -> None:
        pass


def gpu_machine() -> Machine:
    card = Device("CUDA0", "NVIDIA RTX test", "gpu", 8 * GiB, 8 * GiB, "nvidia")
    return Machine(32 * GiB, 30 * GiB, 8, 16, (card,), True)


def test_failed_gpu_load_retries_one_layer_fewer_and_remembers(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    events: list = []
    engine = GpuThatHolds(fits=1)
    session = ChatSession(Store(tmp_path / "c.db"), events.append, engine=engine)  # type: ignore[arg-type]
    plan = session.load_model(tiny_models["hybrid"], 512, machine=gpu_machine())
    assert plan.n_gpu_layers == -1  # the tiny model fits the (simulated) GPU on paper
    assert [r.n_gpu_layers for r in engine.requests] == [-1, 2, 1]  # all (3 with output) failed, 2 failed, 1 loaded
    assert session.model.ready and session.model.gpu_layers == 1
    assert sum(isinstance(e, Notice) for e in events) == 2
    # the next load on this machine starts from what worked
    engine.requests.clear()
    session.load_model(tiny_models["hybrid"], 512, machine=gpu_machine())
    assert [r.n_gpu_layers for r in engine.requests] == [1]
    assert fit_memory.remembered_layers(fit_memory.key(gpu_machine(), tiny_models["hybrid"],
                                                       tiny_models["hybrid"].stat().st_size)) == 1


def load(model: Path, request: LoadRequest) -> object:
    loaded = threading.Event()
    seen: list = []

    def on(event: object) -> None:
        seen.append(event)
        if isinstance(event, Loaded | Failed):
            loaded.set()

    engine = Engine(on).start()
    try:
        engine.load(request)
        assert loaded.wait(60)
        return seen[-1]
    finally:
        engine.shutdown()


def test_plan_settings_reach_llama_cpp(tiny_models: dict[str, Path], real_model: Path) -> None:
    """Expert overrides, YaRN, and a q8_0 KV cache with flash attention are accepted by the real llama.cpp."""
    tiny = tiny_models["hybrid"]
    assert isinstance(load(tiny, LoadRequest(tiny, 1024, n_cpu_moe=2, yarn_factor=2, yarn_orig_ctx=512)), Loaded)
    request = LoadRequest(real_model, 2048, kv_type="q8_0", flash_attn=True)
    assert isinstance(load(real_model, request), Loaded)
