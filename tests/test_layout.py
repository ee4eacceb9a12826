"""The package's house shows the DAG: wings (data, teacher, student, evaluation) that match the
stages and talk through the Zarr stores, shared primitives at the top, and no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "echodfkd"
WINGS = ("data", "teacher", "student", "evaluation")
SHARED = ("overlap", "warp", "cost", "runtime", "errors", "cli")
BRIDGE = "echodfkd.data.store"  # the one module any wing may import from another


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(name: str, modules: set[str]) -> str | None:
    """The project module ``name`` refers to: itself, or its package when ``name`` is an
    attribute (``from echodfkd.evaluation import plots`` names ``echodfkd.evaluation.plots``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: project modules it imports anywhere in its file (top level or in functions)}."""
    files = sorted(package.rglob("*.py"))
    modules = {module_name(f) for f in files}
    graph: dict[str, set[str]] = {}
    for f in files:
        me = module_name(f)
        pkg = me if f.name == "__init__.py" else me.rpartition(".")[0]
        out = set()
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                names = [f"{base}.{a.name}" for a in node.names] or [base]
            for n in names:
                target = resolve(n, modules)
                if target and target != me and target.startswith("echodfkd"):
                    out.add(target)
        graph[me] = out
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in WINGS else None


def test_the_package_imports_form_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_wing_imports_a_sibling_wing_except_the_store():
    bad = []
    for m, targets in import_graph().items():
        for t in targets:
            if wing(m) and wing(t) and wing(t) != wing(m) and t != BRIDGE:
                bad.append(f"{m} imports {t}")
    assert bad == []


def test_the_house_has_its_wings_and_shared_primitives():
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert top == set(SHARED)
    for w in WINGS:
        assert (PACKAGE / w / "__init__.py").is_file(), w
    # the shared primitives import no wing
    graph = import_graph()
    for s in SHARED:
        assert not [t for t in graph[f"echodfkd.{s}"] if wing(t)], s
