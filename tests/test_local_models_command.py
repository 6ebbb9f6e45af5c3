"""`qwen-chat list`, `qwen-chat rm`, `qwen-chat models --fits`, `calibrate`'s best of several runs, and the exit
status of a first-run download the network stops."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port
from qwen_chat.cli import welcome as welcome_module
from qwen_chat.cli.local_models_command import run_rm
from qwen_chat.cli.main import main
from qwen_chat.cli.welcome import Choice
from qwen_chat.system.hardware import Machine
from split_fixture import split_model

from tiny_models import write_tiny_qwen3

GiB = 1 << 30


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_qwen3(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An empty models folder and Hugging Face cache of this test's own."""
    models, home = tmp_path / "models", tmp_path / "hf-home"
    models.mkdir()
    monkeypatch.setenv("QWEN_CHAT_MODELS_DIR", str(models))
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return models, home / "hub"


def _in_cache(cache: Path, repo: str, name: str, source: Path) -> Path:
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    blob = repo_dir / "blobs" / "0123abcd"
    blob.parent.mkdir(parents=True)
    shutil.copy(source, blob)
    link = repo_dir / "snapshots" / "main-commit" / name
    link.parent.mkdir(parents=True)
    link.symlink_to(Path("..") / ".." / "blobs" / "0123abcd")
    return link


def test_list_shows_each_model_once_with_quant_place_and_totals(tiny: Path, folders: tuple[Path, Path],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    models, cache = folders
    shutil.copy(tiny, models / "Qwen3-0.6B-Q8_0.gguf")
    split_model(models, per_shard=7)  # tiny-00001-of-0000N.gguf ...: one model
    (models / ".Qwen3-8B-Q4_K_M.gguf.partial").write_bytes(b"x" * 1000)
    _in_cache(cache, "someone/Own-GGUF", "own-Q5_K_M.gguf", tiny)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("  ")]
    assert len(rows) == 3, out
    assert any("Qwen3-0.6B-Q8_0.gguf" in r and "Q8_0" in r and "qwen3-0.6b:Q8_0" in r for r in rows)
    assert any("tiny-00001-of-" in r and "shards" in r and "not in the catalog" in r for r in rows)
    assert any("someone/Own-GGUF: own-Q5_K_M.gguf" in r and "Q5_K_M" in r for r in rows)
    assert f"{models} (models folder): 2 models" in out and "(Hugging Face cache): 1 model" in out
    assert "in downloads not finished" in out and "total: 3 models" in out


def test_list_with_nothing_says_where_it_looked(folders: tuple[Path, Path],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "No GGUF models on this disk" in out and str(folders[0]) in out


def test_rm_asks_first_and_refuses_without_a_terminal(tiny: Path, folders: tuple[Path, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    models, _ = folders
    target = models / "Qwen3-0.6B-Q8_0.gguf"
    shutil.copy(tiny, target)
    assert main(["rm", "qwen3-0.6b"]) == 2  # stdin is not a terminal under pytest: no question, no deletion
    assert "add --yes" in capsys.readouterr().err and target.is_file()
    questions: list[str] = []
    assert run_rm("qwen3-0.6b:Q8_0", ask=lambda q: questions.append(q) or "n") == 0
    assert target.is_file() and "Delete" in questions[0] and "Qwen3-0.6B-Q8_0.gguf" in questions[0]
    assert run_rm("Qwen3-0.6B-Q8_0", ask=lambda q: "y") == 0  # by file name, without .gguf
    assert not target.exists()


def test_rm_never_touches_a_file_outside_the_folder_unless_given_its_path(
        tiny: Path, folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models, cache = folders
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outside = elsewhere / "mine.gguf"
    shutil.copy(tiny, outside)
    cached = _in_cache(cache, "someone/Own-GGUF", "own-Q5_K_M.gguf", tiny)
    for name in ("mine", "mine.gguf", "own-Q5_K_M"):
        assert main(["rm", name, "--yes"]) == 1
        assert "not in the models folder" in capsys.readouterr().err
    assert outside.is_file()
    assert main(["rm", str(cached), "--yes"]) == 1  # the cache is huggingface_hub's to manage
    assert "hf cache delete" in capsys.readouterr().err and cached.is_file()
    assert main(["rm", str(outside), "--yes"]) == 0  # named by its path: deleted
    assert not outside.exists()


def test_rm_removes_every_shard_of_a_split_set(folders: tuple[Path, Path]) -> None:
    models, _ = folders
    first = split_model(models, per_shard=7)
    shards = sorted(models.glob("tiny-*-of-*.gguf"))
    assert len(shards) > 2
    partial = models / f".{shards[1].name}.partial"
    partial.write_bytes(b"half")
    assert main(["rm", shards[1].name, "--yes"]) == 0  # any shard names its set
    assert list(models.iterdir()) == [] and not first.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_rm_refuses_a_model_another_process_has_open(tiny: Path, folders: tuple[Path, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    models, _ = folders
    target = models / "busy.gguf"
    shutil.copy(tiny, target)
    holder = subprocess.Popen([sys.executable, "-c", "import mmap, sys\nf = open(sys.argv[1], 'rb')\n"
                               "m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)\nprint('mapped', flush=True)\n"
                               "sys.stdin.read()", str(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "mapped"
        assert main(["rm", "busy", "--yes"]) == 1
        assert f"pid {holder.pid}" in capsys.readouterr().err and target.is_file()
    finally:
        holder.communicate("", timeout=30)
    assert main(["rm", "busy", "--yes"]) == 0 and not target.exists()


def test_models_fits_shows_only_what_fits_and_stars_only_the_picks(capsys: pytest.CaptureFixture[str]) -> None:
    from qwen_chat.cli.reports import print_models
    from qwen_chat.planning.speed import DeviceRate, Rates

    box = Machine(16 * GiB, 14 * GiB, 8, 16, (), False)
    rates = Rates(DeviceRate(60e9, 2e12, 5e11, measured=True), threads=8)
    assert print_models(box, rates) == 0
    everything = capsys.readouterr().out
    assert print_models(box, rates, fits=True) == 0
    fits = capsys.readouterr().out
    rows = [line for line in fits.splitlines() if " tok/s " in line or line.rstrip().endswith("too big")]
    assert rows and all("too big" not in r for r in rows)
    assert "too big" in everything and len(fits.splitlines()) < len(everything.splitlines())
    starred = [line for line in everything.splitlines()[4:] if "★" in line]
    assert 1 <= len(starred) <= 2  # the quick start and the most capable pick, nothing else
    assert any(line.startswith("qwen3-4b-instruct-2507") and "Q4_K_M" in line for line in starred)


def test_a_first_run_download_the_network_stops_exits_1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(welcome_module, "welcome", lambda: Choice(ref="qwen3-0.6b:Q8_0"))  # as if "1" was typed
    assert main([]) == 1
    assert "cannot reach the hub" in capsys.readouterr().err


def test_calibrate_keeps_the_best_run_and_says_when_the_machine_was_busy(
        tiny: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from qwen_chat.cli.reports import run_calibrate
    from qwen_chat.planning import speed_probe

    # the real probe on a tiny model, with a clock that makes the first of the three prompt runs slow
    durations = iter([0.3, 0.1, 0.2] + [0.004] * (2 * speed_probe.REPEATS * speed_probe.DECODE_TOKENS))
    now = [0.0]

    def clock() -> float:  # called at the start and the end of each timed step: the end adds its duration
        tick = len(calls) % 2
        calls.append(now[0])
        if tick:
            now[0] += next(durations)
        return now[0]

    calls: list[float] = []
    run = speed_probe.run_probe(tiny, 1, clock=clock)
    assert run.prompt_seconds == pytest.approx(0.1) and run.spread == pytest.approx(2.0)
    assert speed_probe.busy_reason([run], 0.05) == "the repeated runs at 1 thread differed by 200%"
    quiet = speed_probe.ProbeRun(2, 256, 0.5, (272.0, 0.02), (1040.0, 0.022), spread=0.05)
    assert speed_probe.busy_reason([quiet], 0.0) == ""
    assert "other programs used 60% of the CPU" in speed_probe.busy_reason([quiet], 0.6)

    real_calibrate = speed_probe.calibrate

    def stubbed(model: Path, box: Machine, gpu: bool = False) -> speed_probe.Calibration:
        return real_calibrate(model, box, gpu, probe=lambda m, t, g: run, load=lambda: 0.6)

    monkeypatch.setattr(speed_probe, "calibrate", stubbed)
    assert run_calibrate(tiny, machine=Machine(8 * GiB, 6 * GiB, 1, 2, (), False)) == 0
    out = capsys.readouterr().out
    assert "best of 3 short runs" in out and "note: the machine was busy" in out and "calibrate again" in out
