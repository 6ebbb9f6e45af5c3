"""The checks CI runs on the code itself: the type checker on app/ and the linter on everything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_mypy_finds_no_type_errors_in_app() -> None:
    result = run("mypy")  # files and options: [tool.mypy] in pyproject.toml
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_ruff_is_clean() -> None:
    result = run("ruff", "check", "app", "tests", "bench", "packaging")
    assert result.returncode == 0, result.stdout + result.stderr
