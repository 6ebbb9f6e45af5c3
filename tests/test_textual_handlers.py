"""Textual calls a message handler (`on_mount`, `_on_key`, ...) of every class along the MRO itself, so a handler
that also calls `super()`'s runs the parent's twice: the benchmark's app opened its model twice that way and
crashed llama.cpp with two loads at once (issue 21). No handler in the app, the benchmarks or the tests does."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
HANDLER = re.compile(r"_?on_[a-z0-9_]+")
# overriding these and calling super() is right: they dispatch messages, they are not a handler of one
DISPATCHERS = {"on_event", "_on_message"}


def handler_super_calls(path: Path, root: Path = ROOT) -> set[str]:
    """`file: function calls super().handler` for each such call, named by the innermost function around it."""
    around: dict[ast.Call, str] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):  # outer functions come before inner ones
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for call in ast.walk(node):
                if isinstance(call, ast.Call) and _super_handler(call):
                    around[call] = node.name
    name = path.relative_to(root).as_posix()
    return {f"{name}: {function} calls super().{_super_handler(call)}" for call, function in around.items()}


def _super_handler(call: ast.Call) -> str:
    """The handler's name when `call` is `super().<handler>(...)`, else ""."""
    func = call.func
    if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Call) and isinstance(func.value.func, ast.Name)
            and func.value.func.id == "super" and HANDLER.fullmatch(func.attr) and func.attr not in DISPATCHERS):
        return func.attr
    return ""


def test_no_handler_calls_the_one_textual_calls_next() -> None:
    found: set[str] = set()
    for folder in ("app", "bench", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            found |= handler_super_calls(path)
    assert found == set()


def test_the_check_sees_the_benchmarks_old_double_mount(tmp_path: Path) -> None:
    old = tmp_path / "app_speed_inside.py"
    old.write_text("class MonitoredApp(QwenChatApp):\n    def on_mount(self):\n        super().on_mount()\n"
                   "    async def _in_order(self, message):\n        super()._in_order(message)\n"
                   "    async def on_event(self, event):\n        await super().on_event(event)\n")
    assert handler_super_calls(old, tmp_path) == {"app_speed_inside.py: on_mount calls super().on_mount"}
