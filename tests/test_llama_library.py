"""llama-cpp-python as the app reaches it (issue 21): llama.cpp's log callback is ours before the library's first
backend call (the CUDA backend lists its devices on stderr at the hardware probe otherwise), and `doctor` names a
working package that has no distribution metadata."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from qwen_chat.cli.reports import llama_cpp_version, print_doctor
from qwen_chat.system.hardware import Machine

# Run in a fresh interpreter: llama_cpp imported, its entry points wrapped to record the order they are reached,
# then the hardware probe; then llama.cpp made to log through whatever callback is installed (a failing load of
# a missing file logs errors at once), then a real load of a tiny model with the engine (verbose=True).
PROBE = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    import llama_cpp
    import llama_cpp.llama_cpp as C

    calls = []

    def recorded(name, function):
        def call(*args):
            calls.append(name)
            return function(*args)
        return call

    for name in ("llama_log_set", "llama_backend_init", "llama_supports_gpu_offload"):
        setattr(llama_cpp, name, recorded(name, getattr(llama_cpp, name)))

    class RecordingLibrary:
        def __init__(self, lib):
            self._lib = lib
        def __getattr__(self, name):
            if name.startswith(("ggml_backend", "llama_backend")):
                calls.append(name)
            return getattr(self._lib, name)

    C._lib = RecordingLibrary(C._lib)
    from qwen_chat.system.logging_setup import setup_logging
    from qwen_chat.system.hardware import detect

    setup_logging()
    detect()
    print(",".join(calls))
    missing = llama_cpp.llama_model_load_from_file(b"/nonexistent/model.gguf", llama_cpp.llama_model_default_params())
    assert not missing

    from qwen_chat.engines.llama import Engine
    from qwen_chat.engines.protocol import Failed, Loaded, LoadRequest
    done = threading.Event()
    engine = Engine(lambda e: done.set() if isinstance(e, Loaded | Failed) else None).start()
    engine.load(LoadRequest(Path(sys.argv[1]), n_ctx=256))
    assert done.wait(60)
    engine.shutdown()
""")


def test_llama_cpp_logs_are_routed_before_the_first_backend_call(tiny_models: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    env = {**os.environ, "QWEN_CHAT_DATA_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", PROBE, str(tiny_models["hybrid"])], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    calls = result.stdout.strip().split(",")
    backend = [i for i, name in enumerate(calls) if name != "llama_log_set"]
    assert "llama_log_set" in calls and backend, calls
    assert calls.index("llama_log_set") < backend[0], f"a backend call came before the log callback: {calls}"
    assert result.stderr == ""  # nothing of llama.cpp's on fd 2: the probe, the failed load, the real load
    log = (tmp_path / "logs" / "llama.log").read_text()
    assert "/nonexistent/model.gguf" in log  # the failed load's errors went to the file instead
    assert "llama_model_loader" in log or "print_info" in log  # and the real load's lines


def test_doctor_reads_the_version_from_the_package_when_it_has_no_metadata(monkeypatch: pytest.MonkeyPatch,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import llama_cpp

    real = metadata.version

    def without_llama_metadata(dist: str) -> str:  # as with a build on PYTHONPATH: no dist-info
        if dist == "llama-cpp-python":
            raise metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr("qwen_chat.cli.reports.metadata.version", without_llama_metadata)
    machine = Machine(8 << 30, 4 << 30, 2, 2, (), False)
    assert print_doctor(machine) == 0
    out = capsys.readouterr().out
    assert f"llama-cpp-python {llama_cpp.__version__} (no package metadata)" in out
    assert "not installed" not in out


def test_doctor_says_not_installed_only_when_the_import_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_metadata(dist: str) -> str:
        raise metadata.PackageNotFoundError(dist)

    monkeypatch.setattr("qwen_chat.cli.reports.metadata.version", no_metadata)
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` raises ImportError
    assert llama_cpp_version() == "not installed"
