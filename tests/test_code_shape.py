"""The package's shape (issue H): layers that import only downward, no cycles, small modules and functions."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "jaxlmm"

# lower rank = lower layer; a module may import modules of its own rank or lower
LAYERS = {"base": 0, "core": 1, "model": 2, "inference": 3, "results": 4, "parallel": 5, "many": 6, "engines": 7,
          "fitting": 8, "plot": 9, "gwas": 10, "cli": 11, "entry": 12}
SPECIAL = {"_config": LAYERS["core"]}   # process settings: the cache folder (core.cache_safety), XLA flags
BASE = {"errors", "_x64", "_program_budget", "datasets"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return LAYERS["entry"]
    head = parts[1]
    if head in BASE:
        return LAYERS["base"]
    if head in SPECIAL:
        return SPECIAL[head]
    return LAYERS.get(head, LAYERS["entry"])


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Every import of a jaxlmm module by a jaxlmm module, at any depth (functions included)."""
    edges = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    name = full if full in modules else target
                    if name in modules and name != mod:
                        edges[mod].add(name)
            elif isinstance(node, ast.Import):
                edges[mod].update(a.name for a in node.names if a.name in modules and a.name != mod)
    return edges


def test_no_import_cycles():
    edges = _imports(_modules())
    state: dict[str, int] = {}
    cycles = []

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


def test_layers_import_only_downward():
    edges = _imports(_modules())
    upward = [(a, b) for a, targets in edges.items() for b in targets
              if _layer(b) > _layer(a) and b != "jaxlmm" and a != "jaxlmm"]
    assert not upward, "upward imports: " + ", ".join(f"{a} -> {b}" for a, b in sorted(upward)[:10])


def test_core_has_no_pandas():
    for path in (SRC / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] in ("pandas", "formulaic") for n in names), path


def test_modules_and_functions_are_small():
    long_modules = [(p.name, n) for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500]
    assert not long_modules, long_modules
    long_functions = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = [ln for ln in lines[node.lineno - 1:node.end_lineno]
                        if ln.strip() and not ln.strip().startswith("#")]
                doc = ast.get_docstring(node)
                n = len(body) - (len(doc.splitlines()) if doc else 0)
                if n > 80:
                    long_functions.append((path.name, node.name, n))
    assert not long_functions, long_functions


# inside core/: the sub-packages by role (core/__init__.py), each importing only from its rank or lower
CORE_LAYERS = {"status": 0, "carry": 0, "linalg": 0, "compile": 0, "likelihood": 0, "optim": 1, "params": 2,
               "pls": 3, "glmm": 4, "dense": 4, "marginal": 4, "spectral": 4, "multivariate": 4}


def _core_layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[:2] != ["jaxlmm", "core"] or len(parts) < 3:
        return None
    return CORE_LAYERS[parts[2]]


def test_core_subpackages_import_only_downward():
    edges = _imports(_modules())
    upward = [(a, b) for a, targets in edges.items() for b in targets
              if _core_layer(a) is not None and _core_layer(b) is not None and _core_layer(b) > _core_layer(a)]
    assert not upward, "upward imports in core: " + ", ".join(f"{a} -> {b}" for a, b in sorted(upward)[:10])


def test_core_is_split_by_role():
    """No flat folder: core/ holds its sub-packages and at most a few foundation modules, and every
    module of core lives in a sub-package named in CORE_LAYERS."""
    flat = [p.name for p in (SRC / "core").glob("*.py") if p.name != "__init__.py"]
    assert len(flat) <= 3, flat
    packages = {p.name for p in (SRC / "core").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert packages <= set(CORE_LAYERS), packages - set(CORE_LAYERS)
    for folder in (SRC / "core").rglob("*"):
        if folder.is_dir() and folder.name != "__pycache__":
            assert len(list(folder.glob("*.py"))) <= 20, folder
