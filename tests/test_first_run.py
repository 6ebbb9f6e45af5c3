"""First run, `--model` by name, and `qwen-chat ask` for scripts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qwen_chat.cli.main import main
from qwen_chat.cli.welcome import recommend, welcome
from qwen_chat.hub.resolve import ModelNotFound, resolve_model
from qwen_chat.system.hardware import Device, Machine

GiB = 1 << 30


def machine(available: float, gpu: float = 0) -> Machine:
    gpus = (Device("CUDA0", "RTX test", "gpu", int(gpu * GiB), int(gpu * GiB), "nvidia"),) if gpu else ()
    return Machine(int(available * 1.2 * GiB), int(available * GiB), 8, 16, gpus, bool(gpus))


def test_recommendation_follows_the_machine() -> None:
    assert recommend(machine(5)).model.id in ("qwen3.5-4b", "qwen3-4b-instruct-2507", "qwen3-4b", "qwen3-1.7b")
    # CPU only, 8 cores: the MoE reads 3B parameters' worth per token, fast enough where a dense model is not
    assert recommend(machine(28)).model.id == "qwen3.6-35b-a3b"
    assert recommend(machine(28), min_tokens_per_second=45).model.id != "qwen3.6-35b-a3b"
    assert recommend(machine(28, gpu=24)).model.id == "qwen3.6-35b-a3b"
    assert recommend(machine(0.5)) is None


def test_welcome_offers_the_download_or_explains_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    said: list[str] = []
    assert welcome(machine(28), ask=lambda q: "", say=said.append) == "qwen3.6-35b-a3b:Q4_K_M"
    assert any("Recommended: Qwen3.6-35B-A3B Q4_K_M" in s for s in said)
    assert any(s.startswith("Why: ") and "tok/s" in s for s in said)
    assert welcome(machine(28), ask=lambda q: "n", say=said.append) is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    said.clear()
    assert welcome(machine(28), ask=lambda q: pytest.fail("must not ask offline"), say=said.append) is None
    assert any("offline" in s and "--model PATH.gguf" in s for s in said)


def test_model_by_path_id_or_name(tiny_models: dict[str, Path], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("QWEN_CHAT_MODELS_DIR", str(models))
    assert resolve_model(str(tiny_models["hybrid"])) == tiny_models["hybrid"]
    with pytest.raises(ModelNotFound, match="not downloaded yet. Get it with: qwen-chat pull qwen3-0.6b"):
        resolve_model("qwen3-0.6b")
    shutil.copy(tiny_models["hybrid"], models / "Qwen3-0.6B-Q8_0.gguf")
    assert resolve_model("qwen3-0.6b") == models / "Qwen3-0.6B-Q8_0.gguf"
    assert resolve_model("qwen3-0.6b:q8_0") == models / "Qwen3-0.6B-Q8_0.gguf"
    assert resolve_model("Qwen3-0.6B-Q8_0") == models / "Qwen3-0.6B-Q8_0.gguf"
    with pytest.raises(ModelNotFound, match="did you mean"):
        resolve_model("qwen3-0.7b")


def test_ask_answers_on_stdout_and_works_in_a_pipe(real_model: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "qwen-chat"
    env = {"QWEN_CHAT_DATA_DIR": str(tmp_path), "PATH": str(exe.parent), "HOME": str(tmp_path)}
    # stdin is /dev/null: text piped into stdin would be added to the question (and an open pipe waited for)
    result = subprocess.run([str(exe), "--model", str(real_model), "ask", "Reply with just the word: hello"],
                            capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert "hello" in result.stdout.lower() and result.stderr == ""
    piped = subprocess.run([str(exe), "--model", str(real_model), "ask"], input="What is 2+2? Only the number.",
                           capture_output=True, text=True, env=env, timeout=120)
    assert piped.returncode == 0 and "4" in piped.stdout


def test_ask_hides_thinking_unless_asked(tiny_models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    # --seed 1 makes the random-weight model think about 250 characters of noise (without a seed it now and then
    # closes its thinking at once): the same thinking both times, hidden, then shown
    model = ["--model", str(tiny_models["thinking"]), "--ctx", "512"]
    assert main([*model, "ask", "--seed", "1", "hi"]) == 0
    hidden = capsys.readouterr()
    assert hidden.err == ""
    assert main([*model, "ask", "--seed", "1", "--show-thinking", "hi"]) == 0
    shown = capsys.readouterr()
    assert len(shown.err.strip()) > 100  # the always-thinking model's (noise) thinking went to stderr
