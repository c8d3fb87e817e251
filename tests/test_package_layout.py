"""The shape of the package: floors that follow the data flow, no import circles, one import path
per name, config as pure data, no oversized modules.

Every import counts, wherever it sits (module level, inside a function, under TYPE_CHECKING).
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PKG = SRC / "landmark_retrieval"

#: floors, lowest first: a module imports only from its own floor or lower ones
FLOORS: List[Tuple[str, Tuple[str, ...]]] = [
    ("ground", ("config", "features", "overrides")),
    ("io", ("io",)),
    ("backends", ("backends",)),
    ("search", ("search",)),
    ("matching", ("matching",)),
    ("configured", ("presets", "metrics", "dependencies")),
    ("steps", ("extract", "retrieve", "verify", "predict", "submit", "evaluate")),
    ("tools", ("pipeline", "budget", "cli", "cli_parser", "kaggle", "demo", "compare", "visualize", "viz", "split",
               "wheelhouse", "testing", "photos", "__init__", "__main__")),
]
STEPS = dict(FLOORS)["steps"]
#: modules allowed to import package modules inside functions: the CLI loads a command's modules
#: only when that command runs (``--help`` and ``presets`` stay fast)
LAZY_IMPORTERS = {"landmark_retrieval.cli", "landmark_retrieval.cli_parser"}
#: package modules that any module may import inside a function: they load TensorFlow or ONNX
LAZY_TARGETS = ("landmark_retrieval.testing",)
MAX_LINES = 500


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules(root: Path, package: str) -> Dict[str, Path]:
    return {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}


def imports(path: Path, name: str, tree: "ast.AST | None" = None) -> List[Tuple[ast.stmt, str]]:
    """(node, absolute module it imports from) of every import in the file (``tree``: the file
    already parsed)."""
    tree = tree or ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((node, target))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                out.append((node, alias.name))
    return out


def edges(mods: Dict[str, Path]) -> Dict[str, Set[str]]:
    """module -> package modules it imports (``from pkg import submodule`` counts as the submodule)."""
    out: Dict[str, Set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for node, target in imports(path, m):
            names = [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else []
            hits = [f"{target}.{n}" for n in names if f"{target}.{n}" in mods]
            if not hits:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                hits = [target] if target else []
            out[m].update(h for h in hits if h != m)
    return out


def circles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def floor_of(module: str) -> int:
    first = module.split(".")[1] if "." in module else "__init__"
    for i, (_, names) in enumerate(FLOORS):
        if first in names:
            return i
    raise AssertionError(f"{module} is on no floor: add it to FLOORS in {Path(__file__).name}")


SRC_MODULES = modules(SRC, "landmark_retrieval")
SRC_GRAPH = edges(SRC_MODULES)


def test_no_import_circles_in_the_package():
    assert circles(SRC_GRAPH) == []


def test_no_import_circles_in_the_benchmarks():
    bench = {p.stem: p for p in sorted((REPO / "benchmarks").glob("*.py"))}
    graph = {m: set() for m in bench}
    for m, path in bench.items():
        for _, target in imports(path, m):
            if target in bench and target != m:
                graph[m].add(target)
    assert circles(graph) == []


def test_every_module_is_on_a_floor_and_imports_only_from_its_floor_or_below():
    upward = [(m, t) for m, targets in SRC_GRAPH.items() for t in targets if floor_of(t) > floor_of(m)]
    assert upward == []


def test_steps_talk_only_through_work_dir_files():
    step_modules = {f"landmark_retrieval.{s}" for s in STEPS}
    leaks = [(m, t) for m in step_modules for t in SRC_GRAPH[m] if t in step_modules]
    assert leaks == []


def test_config_is_the_ground_floor():
    assert SRC_GRAPH["landmark_retrieval.config"] == set()
    assert SRC_GRAPH["landmark_retrieval.features"] == set()


def test_no_module_is_oversized():
    big = {m: n for m, p in SRC_MODULES.items() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert big == {}


def _type_checking_nodes(tree: ast.AST) -> Set[int]:
    inside: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            inside.update(id(n) for n in ast.walk(node))
    return inside


def test_package_imports_sit_at_module_level():
    """Function-level imports only where they defer loading on purpose (:data:`LAZY_IMPORTERS`,
    :data:`LAZY_TARGETS`); heavy optional libraries (TensorFlow, torch, faiss, Dask) are imported
    inside the package's functions, package modules are not."""
    late = []
    for m, path in SRC_MODULES.items():
        if m in LAZY_IMPORTERS:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(n) for n in tree.body}
        checking = _type_checking_nodes(tree)
        for node, target in imports(path, m, tree):
            if (isinstance(node, ast.ImportFrom) and target.startswith("landmark_retrieval")
                    and id(node) not in top and id(node) not in checking and not target.startswith(LAZY_TARGETS)):
                late.append(f"{m}:{node.lineno}")
    assert late == []


def _defined(path: Path) -> Set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: Set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, ast.Assign):
            out.update(t.id for t in node.targets if isinstance(t, ast.Name))
            out.update(e.id for t in node.targets if isinstance(t, ast.Tuple)
                       for e in t.elts if isinstance(e, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out.add(node.target.id)
    return out


@pytest.mark.parametrize("tree", ["src", "tests", "benchmarks"])
def test_one_import_path_per_name(tree):
    """Every name imported from the package comes from the module that defines it (no
    re-exports), and no private name crosses modules."""
    defined = {m: _defined(p) for m, p in SRC_MODULES.items()}
    wrong = []
    files = sorted((REPO / tree).rglob("*.py"))
    for path in files:
        name = module_name(path, SRC) if tree == "src" else path.stem
        for node, target in imports(path, name):
            if not isinstance(node, ast.ImportFrom) or target not in SRC_MODULES:
                continue
            for alias in node.names:
                if f"{target}.{alias.name}" in SRC_MODULES:
                    continue  # a submodule
                if alias.name not in defined[target]:
                    wrong.append(f"{path.relative_to(REPO)}:{node.lineno} {alias.name} from {target}")
                elif alias.name.startswith("_") and not alias.name.startswith("__") and tree == "src":
                    wrong.append(f"{path.relative_to(REPO)}:{node.lineno} private {alias.name} from {target}")
    assert wrong == []


def test_the_checks_see_a_circle_and_an_upward_import():
    """The graph code finds what it is meant to find."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert floor_of("landmark_retrieval.io.store") < floor_of("landmark_retrieval.search.exact")
    assert floor_of("landmark_retrieval.extract") > floor_of("landmark_retrieval.presets")
