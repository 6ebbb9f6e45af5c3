"""First run, `--model` by name, and `qwen-chat ask` for scripts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qwen_chat.cli.main import main
from qwen_chat.cli.welcome import Choice, recommend, welcome
from qwen_chat.hub.probe import HubState
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


ONLINE = HubState(True, "")


def test_welcome_offers_a_quick_start_and_the_most_capable_with_room_to_spare() -> None:
    said: list[str] = []
    box = machine(28, gpu=24)  # 33.6 GiB of RAM: a quarter, 8.4 GiB, is left to the system and the apps

    def run(answer: str) -> Choice:
        said.clear()
        return welcome(ask=lambda q: answer, say=said.append, state=ONLINE, local=[], machine=box)

    assert run("") == Choice(ref="qwen3-4b-instruct-2507:Q4_K_M")  # Enter: the quick start
    text = "\n".join(said)
    assert "1) Quick start: Qwen3-4B-Instruct-2507 Q4_K_M, 2.5 GB download" in text
    assert "2) Most capable with room to spare: Qwen3.6-35B-A3B Q4_K_M, ~21.4 GB download" in text  # estimated: ~
    assert "leaving at least 8.4 GiB of RAM" in text and "1 GiB per GPU kept free" in text
    assert "2,000-token prompt read in" in text
    assert run("2") == Choice(ref="qwen3.6-35b-a3b:Q4_K_M")
    assert run("n") == Choice() and any("qwen-chat pull qwen3.6-35b-a3b:Q4_K_M" in s for s in said)
    assert run("7").code == 2


def test_offline_says_so_first_and_offers_the_files_on_disk(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from qwen_chat.hub.local_models import find_local_ggufs

    said: list[str] = []
    offline = HubState(False, "HF_HUB_OFFLINE is set")
    nothing = welcome(ask=lambda q: pytest.fail("nothing to ask"), say=said.append, state=offline, local=[],
                      machine=machine(28))
    assert nothing == Choice(code=1)  # offline with nothing on disk is a failure, not wrong usage
    assert said[1].startswith("You are offline: HF_HUB_OFFLINE is set") and "--model PATH.gguf" in said[-1]
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(tiny_models["hybrid"], folder / "my-own-Q8_0.gguf")
    said.clear()
    local = find_local_ggufs(folder, tmp_path / "no-cache")
    chosen = welcome(ask=lambda q: "", say=said.append, state=offline, local=local, machine=machine(28))
    assert chosen == Choice(path=folder / "my-own-Q8_0.gguf")
    assert said[1].startswith("You are offline") and any("1) open tiny-qwen3-test Q8_0" in s for s in said)


def test_the_capable_pick_leaves_a_quarter_of_the_ram() -> None:
    from qwen_chat.catalog.loader import load_models
    from qwen_chat.planning.recommend import offers
    from qwen_chat.planning.speed import DeviceRate, Rates

    box = Machine(int(23.5 * GiB), int(22 * GiB), 16, 32, (), False)
    fast = Rates(DeviceRate(200e9, 4e12, 1e12, measured=True), threads=16)  # speed is not what limits here
    models = load_models()
    unlimited = recommend(box, models, fast)
    assert unlimited is not None and unlimited.plan.ram_bytes > box.ram_total - 5.875 * GiB  # the old pick
    picks = offers(box, models, fast)
    assert picks.margin_bytes == int(23.5 * GiB / 4)
    assert picks.capable is not None and picks.quick is not None
    assert picks.capable.plan.ram_bytes + picks.margin_bytes <= box.ram_total
    assert picks.quick.model.quants[picks.quick.plan.quant].size <= 2.6e9
    small = offers(Machine(8 * GiB, 7 * GiB, 16, 32, (), False), models, fast)
    assert small.margin_bytes == 4 * GiB  # at least 4 GiB


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
