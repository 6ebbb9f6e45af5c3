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
MAX_MODULE_LINES = 400  # past this a module holds more than one thing: split out a cohesive part


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


TESTS = Path(__file__).resolve().parent


def imported_tests(path: Path, test_modules: set[str]) -> list[str]:
    """The test modules `path` imports (`import test_x`, `from test_x import ...`, `from tests.test_x import`)."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] + [f"{node.module or ''}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [name for name in names if set(name.split(".")) & test_modules]
    return sorted(set(found))


def _test_modules() -> set[str]:
    return {p.stem for p in TESTS.rglob("test_*.py")}


def test_no_test_module_imports_another() -> None:
    """Shared code lives in helper modules (helpers.py, fake_engine.py ...): importing a test module would run
    its tests twice and tie one file's tests to another's."""
    imports = {str(p.relative_to(TESTS)): imported_tests(p, _test_modules()) for p in sorted(TESTS.rglob("*.py"))}
    assert {path: found for path, found in imports.items() if found} == {}


def test_the_test_import_check_sees_one(tmp_path: Path) -> None:
    """The checker itself, so the test above can fail."""
    probe = tmp_path / "probe.py"
    probe.write_text("import helpers\nfrom test_tui import ask\n\ndef f():\n    import tests.test_store\n")
    assert imported_tests(probe, _test_modules()) == ["test_tui", "test_tui.ask", "tests.test_store"]
