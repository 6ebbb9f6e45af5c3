"""The real Qwen2.5 test model, split into three shards and served by the loopback hub:
`qwen-chat pull` → resumable verified download → merge → load → a real answer."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from qwen_chat.cli.main import main
from qwen_chat.engines.llama import Engine
from qwen_chat.engines.protocol import Done, GenerateRequest, Loaded, LoadRequest
from qwen_chat.gguf.files import read_model_info
from qwen_chat.qwen3.sampling import Sampling
from qwen_chat.qwen3.template import ChatTemplate, Turn, build_prompt
from split_fixture import split_gguf

from helpers import write_catalog

REPO = "test-org/Qwen2.5-Coder-0.5B-Instruct-GGUF"
STEM = "qwen2.5-coder-0.5b-instruct-q4_k_m"


@pytest.fixture(scope="module")
def shards(real_model: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return split_gguf(real_model, tmp_path_factory.mktemp("shards"), STEM, 3)


def write_shards_catalog(shards: list[Path]) -> None:
    """A user catalog with the real model's shards as the Q4_K_M of "qwen2.5-coder-0.5b"."""
    write_catalog("qwen2.5-coder-0.5b", REPO, {"Q4_K_M": [(f"Q4_K_M/{s.name}", s.stat().st_size) for s in shards]},
                  name="Qwen2.5-Coder-0.5B-Instruct", variant="instruct-2507", params=494032768, layers=24,
                  hidden=896, heads=14, kv_heads=2, head_dim=64, native_context=32768, gguf_context=32768)


def test_pull_merge_load_answer(hub, shards: list[Path], real_model: Path, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    hub.add_repo(REPO, {f"Q4_K_M/{s.name}": s.read_bytes() for s in shards})
    write_shards_catalog(shards)
    models = tmp_path / "models"
    monkeypatch.setenv("QWEN_CHAT_MODELS_DIR", str(models))
    hub.fault(REPO, f"Q4_K_M/{shards[1].name}", drop_after=50 << 20, times=1)  # the Wi-Fi drops once

    assert main(["pull", "qwen2.5-coder-0.5b:Q4_K_M"]) == 0
    out = capsys.readouterr()
    merged = models / f"{STEM}.gguf"
    assert f"ready: qwen-chat --model {merged}" in out.out
    assert not list(models.glob(f"{STEM}-0000*"))  # shards removed after the verified merge
    served = hub.bytes_served(f"Q4_K_M/{shards[1].name}")
    assert served <= shards[1].stat().st_size + (10 << 20)  # the drop cost at most 10 MiB again
    # the merged model has exactly the real model's tensors
    info, original = read_model_info(merged), read_model_info(real_model)
    assert [t.n_bytes for t in info.headers[0].tensors] == [t.n_bytes for t in original.headers[0].tensors]
    with merged.open("rb") as a, real_model.open("rb") as b:
        a.seek(info.headers[0].data_offset)
        b.seek(original.headers[0].data_offset)
        assert hashlib.sha256(a.read()).digest() == hashlib.sha256(b.read()).digest()

    # a second pull fetches nothing
    hub.reset_counts()
    assert main(["pull", "qwen2.5-coder-0.5b:Q4_K_M"]) == 0
    assert sum(hub.bytes_served(f"Q4_K_M/{s.name}") for s in shards) == 0

    # and it answers
    done = threading.Event()
    result: list = []
    engine = Engine(lambda e: (result.append(e), done.set()) if isinstance(e, Loaded | Done) else None).start()
    try:
        engine.load(LoadRequest(merged, 2048))
        assert done.wait(60) and isinstance(result[-1], Loaded)
        done.clear()
        prompt = build_prompt(ChatTemplate(info.chat_template), [Turn("user", "Say hello.")], enable_thinking=False)
        engine.generate(GenerateRequest(1, prompt, Sampling(temperature=0.0, max_tokens=16, seed=1)))
        assert done.wait(60) and isinstance(result[-1], Done)
        assert "hello" in result[-1].answer.lower()
    finally:
        engine.shutdown()


def test_exact_plan_from_remote_headers_before_download(hub, shards: list[Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    hub.add_repo(REPO, {f"Q4_K_M/{s.name}": s.read_bytes() for s in shards})
    write_shards_catalog(shards)
    assert main(["plan", "qwen2.5-coder-0.5b:Q4_K_M", "--exact", "--ctx", "4096"]) == 0
    out = capsys.readouterr().out
    assert "sizes exact (GGUF header)" in out
    fetched = sum(hub.bytes_served(f"Q4_K_M/{s.name}") for s in shards)
    assert 0 < fetched < sum(s.stat().st_size for s in shards) // 10  # headers only, not the weights
    assert main(["plan", "qwen2.5-coder-0.5b:Q4_K_M", "--ctx", "4096"]) == 0
    assert "sizes from the catalog" in capsys.readouterr().out
