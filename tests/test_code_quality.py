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


MAX_FUNCTION_LINES = 50
MAX_MODULE_LINES = 440  # "about 400": a few modules sit just above it (downloads, the app and its actions)


def _sizes() -> tuple[list[str], list[str]]:
    import ast

    import qwen_chat

    long_functions, long_modules = [], []
    for path in sorted(Path(qwen_chat.__file__).parent.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        if len(source.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{path.name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.name}:{node.lineno} {node.name}: {size} lines")
    return long_functions, long_modules


def test_functions_fit_on_a_screen_and_modules_stay_small() -> None:
    long_functions, long_modules = _sizes()
    assert not long_functions, long_functions
    assert not long_modules, long_modules
