"""The layering is enforced here: each package imports only from itself and from the packages below it, and no
two modules import each other (directly or round a longer loop). Lazy imports inside functions count too: a
cycle hidden in a function is still a cycle."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import qwen_chat

PACKAGE = Path(qwen_chat.__file__).parent

# Top to bottom: a package may import the ones after it, never the ones before it.
LAYERS = ("cli", "tui", "serve", "session", "tools", "engines", "config", "qwen3", "planning", "hub", "catalog", "gguf",
          "store", "system")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """The qwen_chat modules `path` imports (for `from qwen_chat.x import name`, `qwen_chat.x.name` when that is
    a module, else `qwen_chat.x`)."""
    found: set[str] = set()
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("qwen_chat"))
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: imports are absolute (from qwen_chat.layer.module import ...)"
            if node.module and node.module.startswith("qwen_chat"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in modules else node.module)
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else None


def graph() -> dict[str, set[str]]:
    return {module_name(p): imported(p) for p in PACKAGE.rglob("*.py")}


def test_every_module_lives_in_a_layer() -> None:
    loose = sorted(m for m in graph() if layer_of(m) is None and m not in ("qwen_chat", "qwen_chat.__main__")
                   and not (m.count(".") == 1 and m.split(".")[1] in LAYERS))
    assert loose == [], "move these into one of the layer packages: " + ", ".join(loose)


def test_imports_point_down() -> None:
    upward = []
    for module, targets in graph().items():
        own = layer_of(module) or (module.split(".")[1] if module.count(".") == 1 else None)
        if own not in LAYERS:
            continue
        for target in targets:
            theirs = layer_of(target) or (target.split(".")[1] if target.count(".") == 1 else None)
            if theirs in LAYERS and LAYERS.index(theirs) < LAYERS.index(own):
                upward.append(f"{module} -> {target}")
    assert sorted(upward) == []


def test_no_import_cycles() -> None:
    edges = graph()
    state: dict[str, int] = defaultdict(int)  # 0 unseen, 1 on the current path, 2 done
    cycles: list[str] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if target not in edges or target == module:
                continue
            if state[target] == 1:
                cycles.append(" -> ".join([*path[path.index(target):], target]))
            elif state[target] == 0:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(edges):
        if state[module] == 0:
            visit(module, [module])
    assert cycles == []


def test_the_tui_imports_only_the_stores_record_types() -> None:
    """The UI asks the session (session/conversation.py: the open conversation) and never queries SQLite itself:
    of the store it may import only the record types it is handed (issue 20)."""
    reaching = sorted(f"{module} -> {target}" for module, targets in graph().items() if layer_of(module) == "tui"
                      for target in targets
                      if layer_of(target) == "store" and target != "qwen_chat.store.records")
    assert reaching == []


def store_reads(source: str) -> list[int]:
    """The lines of `source` that reach an attribute named `store` (`self.session.store`, `conversation.store.x`);
    an import of `qwen_chat.store.records` is no attribute access and does not count."""
    return sorted(node.lineno for node in ast.walk(ast.parse(source))
                  if isinstance(node, ast.Attribute) and node.attr == "store")


def test_the_tui_never_touches_the_store() -> None:
    """Not even through the session: every read and write goes through the session layer's narrow objects (the
    open conversation, which also keeps the personas and the tools switched off), never `something.store`."""
    found = [f"{path.relative_to(PACKAGE)}:{line}" for path in sorted((PACKAGE / "tui").rglob("*.py"))
             for line in store_reads(path.read_text(encoding="utf-8"))]
    assert found == []


def test_the_store_check_sees_a_store_attribute() -> None:
    """The checker itself: an attribute named `store` is found, an import of the store's records is not."""
    source = "from qwen_chat.store.records import Persona\nx = self.session.store.personas()\ny = app.store\n"
    assert store_reads(source) == [2, 3]


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an import from a higher layer is found (so the tests above can fail)."""
    probe = tmp_path / "probe.py"
    probe.write_text("from qwen_chat.tui.app import QwenChatApp\n\ndef f():\n    from qwen_chat.session import chat\n")
    assert imported(probe) == {"qwen_chat.tui.app", "qwen_chat.session.chat"}
    assert layer_of("qwen_chat.tui.app") == "tui" and LAYERS.index("tui") < LAYERS.index("store")


README = Path(__file__).resolve().parents[1] / "README.md"  # the checkout's, also when the package is installed


def readme_map(text: str) -> dict[str, set[str]]:
    """The README's module map: each `| `package/` | ... |` row, in order, with the `name.py` files it names."""
    rows = re.findall(r"^ *\| `(\w+)/` \|(.*)\|\s*$", text, flags=re.M)
    return {package: set(re.findall(r"`(\w+)\.py`", cells)) for package, cells in rows}


def map_problems(documented: dict[str, set[str]]) -> list[str]:
    """What the map and the package disagree on: modules it lacks, names of none, packages out of layer order."""
    problems = []
    if list(documented) != list(LAYERS):
        problems.append(f"the map's packages, top to bottom, are {list(documented)}, not {list(LAYERS)}")
    for layer in LAYERS:
        there = {p.stem for p in (PACKAGE / layer).glob("*.py") if p.stem != "__init__"}
        named = documented.get(layer, set())
        problems += [f"{layer}/{name}.py is not in the README's map" for name in sorted(there - named)]
        problems += [f"the README's map names {layer}/{name}.py, which does not exist"
                     for name in sorted(named - there)]
    return problems


def test_the_readme_map_names_every_module_and_only_those() -> None:
    assert map_problems(readme_map(README.read_text(encoding="utf-8"))) == []


def test_the_map_check_sees_a_missing_and_a_stale_module() -> None:
    """The checker itself (so the test above can fail): a module left out and a row naming a gone one."""
    documented = readme_map(README.read_text(encoding="utf-8"))
    documented["store"] = (documented["store"] - {"presence"}) | {"gone"}
    assert map_problems(documented) == ["store/presence.py is not in the README's map",
                                        "the README's map names store/gone.py, which does not exist"]
    del documented["tools"]
    assert any("top to bottom" in problem for problem in map_problems(documented))
