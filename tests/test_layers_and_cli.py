"""Layering (only tui/ imports Textual) and the command line's fast, clear answers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import qwen_chat
from qwen_chat.cli.main import main

PACKAGE = Path(qwen_chat.__file__).parent


def test_nothing_outside_tui_imports_textual() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "tui" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "textual" or n.startswith("textual.") for n in names):
                offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []


PROBE = "import sys; from qwen_chat.cli.main import main\n" \
        "try:\n    main([sys.argv[1]])\nexcept SystemExit:\n    pass\n" \
        "heavy = [m for m in ('textual', 'llama_cpp', 'numpy', 'sqlite_utils', 'jinja2') if m in sys.modules]\n" \
        "print('HEAVY', heavy)"


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_load_nothing_heavy(flag: str) -> None:
    result = subprocess.run([sys.executable, "-c", PROBE, flag], capture_output=True, text=True, timeout=30)
    assert "HEAVY []" in result.stdout
    expected = f"qwen-chat {qwen_chat.__version__}" if flag == "--version" else "--model"
    assert expected in result.stdout


def test_entry_point_runs(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "qwen-chat"
    result = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.strip() == f"qwen-chat {qwen_chat.__version__}"


def test_missing_and_bad_model_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", str(tmp_path / "nope.gguf")]) == 1
    assert "model file not found" in capsys.readouterr().err
    junk = tmp_path / "junk.gguf"
    junk.write_text("<html>")
    assert main(["--model", str(junk)]) == 1
    assert "not a GGUF file" in capsys.readouterr().err


def test_model_that_does_not_fit_is_refused_with_numbers(real_model: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from qwen_chat.system import hardware

    # a simulated 1 GiB machine: the real 0.5B model (491 MB) plus its context and margins cannot fit
    small = hardware.Machine(1 << 30, 1 << 30, 2, 2, (), False)
    monkeypatch.setattr(hardware, "detect", lambda: small)
    assert main(["--model", str(real_model)]) == 1
    err = capsys.readouterr().err
    assert "needs about" in err and "GiB" in err and "free for it" in err


def test_context_beyond_the_model_is_refused(tiny_models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", str(tiny_models["hybrid"]), "--ctx", "10000000"]) == 1
    assert "supports at most 40,960 tokens" in capsys.readouterr().err


def test_no_model_explains_what_to_do(hub: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2  # stdin is not a terminal under pytest: the welcome says how, without asking
    out = capsys.readouterr().out  # the loopback hub answers the probe: the offers, never the network
    assert "Welcome to qwen-chat" in out and "Quick start:" in out and "qwen-chat pull qwen3" in out


def test_split_model_loads_from_first_shard(tmp_path: Path) -> None:
    from qwen_chat.engines.llama import Engine
    from qwen_chat.engines.protocol import Loaded, LoadRequest

    from helpers import Recorder
    from tiny_models import write_tiny_qwen3

    first = write_tiny_qwen3(tmp_path / "split.gguf", split_max_tensors=8)
    assert first.name.endswith("-00001-of-00004.gguf") or "-00001-of-" in first.name
    rec = Recorder()
    eng = Engine(rec).start()
    try:
        eng.load(LoadRequest(first, n_ctx=256))
        assert isinstance(rec.until(Loaded)[0][-1], Loaded)
    finally:
        eng.shutdown()


def test_catalog_and_themes_ship_with_the_package() -> None:
    from qwen_chat.catalog.entries import load_catalog, shipped_file

    assert shipped_file("models_catalog.yaml").is_file()
    assert list(shipped_file("themes").glob("*.toml"))
    presets = load_catalog()["presets"]
    assert all(p["temperature"] > 0 for p in presets.values())  # never greedy
    assert presets["hybrid-thinking"]["presence_penalty_quantized"] == 1.5


def test_a_reader_that_leaves_early_is_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """`qwen-chat models | grep -q NAME`: grep exits at its match while qwen-chat's last output still sits in
    Python's buffer. Flushed at exit, that failed ("Exception ignored ... BrokenPipeError", status 120); main
    must flush it itself, where a broken pipe means a quiet 0."""
    import io

    class ClosedPipe(io.StringIO):
        flushed = 0

        def flush(self) -> None:
            self.flushed += 1
            raise BrokenPipeError(32, "Broken pipe")

    pipe = ClosedPipe()
    monkeypatch.setattr("sys.stdout", pipe)
    assert main(["models"]) == 0
    assert pipe.flushed and "qwen3-235b-a22b" in pipe.getvalue()
