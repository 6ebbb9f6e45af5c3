"""One path from a model to an answer (issue 20): the chat's start reads and plans the model once and hands that
plan to the session, and `ask` loads through a ChatSession like the app, so it too starts from the GPU layers
remembered on this machine and retries a load that ran out of GPU memory with one layer fewer."""

from __future__ import annotations

import queue
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qwen_chat.cli import main as cli_main
from qwen_chat.engines.protocol import Failed, Loaded, LoadRequest
from qwen_chat.planning import fit_memory
from qwen_chat.session import model_loading
from qwen_chat.session.chat import ChatSession
from qwen_chat.session.sources import LocalModel, Server
from qwen_chat.store.database import Store
from qwen_chat.system import hardware
from qwen_chat.system.hardware import Device, Machine
from qwen_chat.system.paths import database_path

from fake_engine import FakeEngine
from helpers import next_event

GiB = 1 << 30


def gpu_machine() -> Machine:
    card = Device("CUDA0", "NVIDIA RTX test", "gpu", 8 * GiB, 8 * GiB, "nvidia")
    return Machine(32 * GiB, 30 * GiB, 8, 16, (card,), True)


def counting(counts: Counter[str], name: str, real: Callable[..., Any]) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> Any:
        counts[name] += 1
        return real(*args, **kwargs)

    return counted


def test_the_chat_start_reads_detects_and_plans_once(tiny_models: dict[str, Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """main checks that the model fits before the screen opens; the session then loads that same plan instead of
    reading the file, detecting the hardware and planning again."""
    from qwen_chat.gguf import files

    counts: Counter[str] = Counter()
    for module, name in ((files, "read_model_info"), (model_loading, "read_model_info"), (model_loading, "plan"),
                         (hardware, "detect"), (model_loading, "detect")):
        monkeypatch.setattr(module, name, counting(counts, name, getattr(module, name)))
    monkeypatch.setattr(cli_main, "_no_terminal", lambda: None)
    engine = FakeEngine()
    opened: list[ChatSession] = []

    def run_app(store: Store, source: LocalModel | Server, seed: int | None) -> int:
        """What the app does with what main hands it: a session on the source, opened as the app opens it."""
        events: queue.Queue[Any] = queue.Queue()
        session = ChatSession(store, events.put, engine=engine, source=source)
        try:
            session.open(context="auto")
            next_event(events, Loaded)
            opened.append(session)
        finally:
            session.close()
            store.close()
        return 0

    monkeypatch.setattr(cli_main, "_run_app", run_app)
    assert cli_main.main(["--model", str(tiny_models["hybrid"]), "--ctx", "512"]) == 0
    assert counts == {"read_model_info": 1, "plan": 1, "detect": 1}
    [session] = opened
    assert [r.n_ctx for r in engine.requests] == [512] and session.model.n_ctx == 512 and session.model.plan is not None


@dataclass
class GpuThatHolds(FakeEngine):
    """A FakeEngine on a GPU (none here) that holds `fits` layers: a load with more fails the way llama.cpp does
    when a buffer allocation runs out of memory."""

    fits: int = 1

    def _load(self, request: LoadRequest) -> None:
        layers = 10**6 if request.n_gpu_layers < 0 else request.n_gpu_layers
        if layers > self.fits:
            self.requests.append(request)
            self._emit(Failed(None, "llama.cpp could not load the model (failed to allocate CUDA0 buffer)"))
            return
        super()._load(request)


def test_ask_retries_a_gpu_load_with_fewer_layers_and_remembers(tiny_models: dict[str, Path],
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """As the app does (test_session.py): all layers fail, then 2, then 1 loads; the next `ask` starts at 1. The
    user's database is never opened: ask keeps nothing."""
    made: list[GpuThatHolds] = []

    def engine(on_event: Any) -> GpuThatHolds:
        made.append(GpuThatHolds(on_event=on_event))
        return made[-1]

    monkeypatch.setattr("qwen_chat.session.model_side.local_engine", engine)
    monkeypatch.setattr(hardware, "detect", gpu_machine)
    model = tiny_models["hybrid"]
    argv = ["ask", "--model", str(model), "--ctx", "512", "--no-think", "hi"]
    assert cli_main.main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out == "Hello from the fake engine.\n" and captured.err == ""
    loads = [r.n_gpu_layers for r in made[0].requests if isinstance(r, LoadRequest)]
    assert loads == [-1, 2, 1]  # all (3 with the output layer) failed, 2 failed, 1 loaded
    assert fit_memory.remembered_layers(fit_memory.key(gpu_machine(), model, model.stat().st_size)) == 1
    assert cli_main.main(argv) == 0
    assert [r.n_gpu_layers for r in made[1].requests if isinstance(r, LoadRequest)] == [1]
    assert capsys.readouterr().out == "Hello from the fake engine.\n"
    assert not database_path().exists()


def test_ask_says_why_a_load_failed_on_the_cpu(tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """On the CPU there is nothing fewer to try: the failure is said once, and ask exits 1."""
    monkeypatch.setattr("qwen_chat.session.model_side.local_engine",
                        lambda on_event: FakeEngine(load_failure="out of memory", on_event=on_event))
    assert cli_main.main(["ask", "--model", str(tiny_models["hybrid"]), "--ctx", "512", "hi"]) == 1
    assert capsys.readouterr().err == "qwen-chat: out of memory\n"
