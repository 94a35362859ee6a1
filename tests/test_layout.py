"""The package's shape: public names resolve, no import cycle, modules stay small."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import aetool

PACKAGE = Path(aetool.__file__).resolve().parent
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        out[".".join(rel.parts).removesuffix(".__init__")] = path
    return out


def _module_level_imports(path: Path) -> set[str]:
    deps = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("aetool"):
            deps.add(node.module)
        elif isinstance(node, ast.Import):
            deps.update(a.name for a in node.names if a.name.startswith("aetool"))
    return deps


def test_every_public_name_resolves() -> None:
    assert len(aetool.__all__) > 30
    for name in aetool.__all__:
        assert getattr(aetool, name) is not None, name


def test_no_module_level_import_cycle() -> None:
    mods = _modules()
    graph = {m: {d for d in _module_level_imports(p) if d in mods} for m, p in mods.items()}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in graph[m]:
            assert state.get(d) != 1, "import cycle: " + " -> ".join([*stack, m, d])
            if d not in state:
                visit(d, [*stack, m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


def test_modules_stay_small() -> None:
    sizes = {m: len(p.read_text().splitlines()) for m, p in _modules().items()}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}


def test_every_module_imports() -> None:
    for name in _modules():
        importlib.import_module(name)
