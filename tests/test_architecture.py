"""The layer order of docs/architecture.md, checked on the source: no import against it, no import cycle
(function-level imports included), and no library module over 500 lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Import package → folder, as in pyproject's package-dir.
FOLDERS = {
    "infership": "infership",
    "infership.runtime": "runtime",
    "infership.calibration": "calibration",
    "infership.convert": "convert",
    "infership.bench": "bench",
    "infership.serve": "serve",
}
#: What each layer may import (besides itself). The facade (``infership``) may import every layer.
ALLOWED = {
    "runtime": set(),
    "calibration": {"runtime"},
    "convert": {"calibration", "runtime"},
    "bench": {"calibration", "runtime"},
    "serve": {"calibration", "runtime"},
    "infership": {"runtime", "calibration", "convert", "bench", "serve"},
}
MAX_LINES = 500
#: An argmax over the class axis, however it is spelled.
_ARGMAX = re.compile(r"argmax\(\s*(axis\s*=\s*)?-?1\s*\)|argmax\([^()]*,\s*(axis\s*=\s*)?-?1\s*\)")


def _modules() -> dict[str, Path]:
    out = {}
    for package, folder in FOLDERS.items():
        base = ROOT / folder
        if not base.is_dir():
            continue
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def _layer(module: str) -> str:
    best = max((p for p in FOLDERS if module == p or module.startswith(p + ".")), key=len)
    return best.rsplit(".", 1)[-1]


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> list[str]:
    if not node.level and node.module == "infership" and all(a.name == "__version__" for a in node.names):
        return []  # the version string: the one thing any layer may read from the facade
    if node.level:
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for _ in range(node.level - 1):
            package = package.rsplit(".", 1)[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    out = []
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        out.append(candidate if candidate in MODULES else base)
    return out


def _imports(module: str, path: Path) -> set[str]:
    """Every infership module ``module`` imports, at any depth of the file (function-level too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = _resolve(module, path, node)
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name.startswith("infership") and name != module:
                found.add(name)
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def test_the_layout_is_found():
    assert "infership.runtime.predictor" in MODULES and "infership.convert.build" in MODULES
    assert len(MODULES) > 40


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_layer_order(module):
    layer = _layer(module)
    wrong = sorted(m for m in GRAPH[module] if _layer(m) != layer and _layer(m) not in ALLOWED[layer])
    assert not wrong, f"{module} ({layer}) imports {wrong}, against the layer order"


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module):
    lines = MODULES[module].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{MODULES[module].relative_to(ROOT)} has {lines} lines (at most {MAX_LINES})"


def test_argmax_over_classes_lives_in_the_classification_task_only():
    offenders = [
        str(p.relative_to(ROOT))
        for m, p in MODULES.items()
        if m != "infership.runtime.tasks" and _ARGMAX.search(p.read_text(encoding="utf-8"))
    ]
    assert not offenders, f"argmax over classes outside runtime/tasks.py: {offenders}"
