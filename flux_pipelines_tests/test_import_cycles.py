"""No import cycles between the modules of flux_pipelines.

Why: a cycle makes the import order matter (a half-initialised module raises at a distance)
and leaves a reader no module to understand first. Imports inside functions count too: a
cycle through a function-local import is still a cycle for a reader, and the usual reason to
write one is to hide a cycle. Imports under ``if TYPE_CHECKING:`` do not count: they never
run and exist only for annotations. A package's ``__init__`` is an edge only when it is
named (``from flux_pipelines.demo import spending`` is an edge to ``demo.spending``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import flux_pipelines

PACKAGE_DIR = Path(flux_pipelines.__file__).parent
PACKAGE = PACKAGE_DIR.name


def module_files(root: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Module name -> file, for every Python file of the package."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements that can run, at any depth (``if TYPE_CHECKING:`` bodies skipped)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _runtime_imports(ast.Module(body=[other], type_ignores=[]))
        else:
            yield from _runtime_imports(child)


def _known(name: str, modules: Mapping[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is one of the package's modules."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, modules: Mapping[str, Path]) -> set[str]:
    """The package's modules that ``module`` imports at run time."""
    path = modules[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for statement in _runtime_imports(tree):
        if isinstance(statement, ast.Import):
            targets = [alias.name for alias in statement.names]
        else:
            base = statement.module or ""
            if statement.level:
                anchor = package.split(".")[: len(package.split(".")) - statement.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # ``from pkg import name``: the submodule when there is one, else pkg itself
            targets = [f"{base}.{alias.name}" for alias in statement.names] or [base]
        for target in targets:
            known = _known(target, modules)
            if known is not None and known != module:
                found.add(known)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, modules) for name in modules}


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # recursion depth is bounded by the module count
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _path(graph: Mapping[str, set[str]], component: list[str]) -> str:
    """One concrete cycle inside a component, for the failure message."""
    members = set(component)
    start = component[0]
    trail = [start]
    seen = {start}
    node = start
    while True:
        nxt = sorted(t for t in graph[node] if t in members)
        back = [t for t in nxt if t == start]
        if back and len(trail) > 1:
            return " -> ".join([*trail, start])
        fresh = [t for t in nxt if t not in seen]
        if not fresh:
            return " -> ".join([*trail, back[0] if back else "..."])
        node = fresh[0]
        trail.append(node)
        seen.add(node)


# Cycles that predate this test (issue 18): all are broken now, and none may be added. The
# set stays so the tests below read the same; an entry would have to be deleted once broken
# (the stale-entry test insists).
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()


def _describe(graph: Mapping[str, set[str]], found: list[list[str]]) -> str:
    return "\n".join(f"  {', '.join(c)}\n    e.g. {_path(graph, c)}" for c in found)


def test_the_package_has_no_new_import_cycles() -> None:
    graph = import_graph()
    new = [c for c in cycles(graph) if frozenset(c) not in KNOWN_CYCLES]
    assert not new, "import cycles (move the shared piece where both can import it):\n" + (
        _describe(graph, new)
    )


def test_known_cycles_are_still_there() -> None:
    """A broken cycle leaves KNOWN_CYCLES, so the list only shrinks."""
    found = {frozenset(c) for c in cycles(import_graph())}
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert not gone, f"no longer cycles, delete them from KNOWN_CYCLES: {gone}"


def test_demo_and_bench_are_in_no_cycle_between_packages() -> None:
    """The demo and the benchmarks sit on top: they may import the pipeline and each other
    one way, and nothing the pipeline or the CLI imports may lead back to them."""
    packages = package_graph(import_graph())
    ours = {f"{PACKAGE}.demo", f"{PACKAGE}.bench"}
    tangled = [c for c in cycles(packages) if ours & set(c)]
    assert not tangled, "cycles between packages:\n" + _describe(packages, tangled)


def _package(module: str) -> str:
    """The top-level package (or module) of flux_pipelines a module belongs to."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """Top-level package -> the packages its modules import (itself left out)."""
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        for target in targets:
            if _package(module) != _package(target):
                packages.setdefault(_package(module), set()).add(_package(target))
    return packages


# Package cycles left on purpose, each with why the clean move was not made; none may be
# added, and a broken one must leave (the stale-entry test below insists).
PACKAGE_CYCLES_ALLOWED: dict[frozenset[str], str] = {
    frozenset({f"{PACKAGE}.access", f"{PACKAGE}.resources"}): (
        "access.layout is the deployed migration entry point (`python -m "
        "flux_pipelines.access.layout` in deploy/) and drives FluxWarehouse's layout moves, "
        "while the warehouse publishes through access.masking"
    ),
}


def test_the_packages_form_a_dag() -> None:
    """Packages import one another one way (a reader can take them bottom-up), apart from
    the allowed cycles above."""
    graph = import_graph()
    packages = package_graph(graph)
    new = [c for c in cycles(packages) if frozenset(c) not in PACKAGE_CYCLES_ALLOWED]
    assert not new, "cycles between packages (move the shared piece down):\n" + _describe(
        packages, new
    )


def test_allowed_package_cycles_are_still_there() -> None:
    found = {frozenset(c) for c in cycles(package_graph(import_graph()))}
    gone = [sorted(c) for c in PACKAGE_CYCLES_ALLOWED if c not in found]
    assert not gone, f"no longer cycles, delete them from PACKAGE_CYCLES_ALLOWED: {gone}"


# The entry points that build the code location to run its jobs in process (CLI commands,
# the demo, the benchmarks); nothing else outside the wiring may import it.
WIRING_IMPORTERS_ALLOWED = frozenset(
    f"{PACKAGE}.{m}"
    for m in ("cli.demo", "cli.load", "demo.runs", "bench.definitions", "bench.backfill")
)


def _is_wiring(module: str) -> bool:
    return module == f"{PACKAGE}.definitions" or (
        module == f"{PACKAGE}.defs" or module.startswith(f"{PACKAGE}.defs.")
    )


def test_only_the_wiring_and_the_entry_points_import_the_wiring() -> None:
    """Domain code never depends on the Dagster wiring (``defs/``, ``definitions.py``): the
    wiring is built from the domains, so a domain importing it is a cycle in the making and
    a domain no one can reuse without Dagster's definitions."""
    graph = import_graph()
    importers = {
        module
        for module, targets in graph.items()
        if not _is_wiring(module) and any(_is_wiring(t) for t in targets)
    }
    unexpected = {
        m: sorted(t for t in graph[m] if _is_wiring(t))
        for m in sorted(importers - WIRING_IMPORTERS_ALLOWED)
    }
    assert not unexpected, f"import the wiring outside defs/ (move the piece down): {unexpected}"
    stale = sorted(WIRING_IMPORTERS_ALLOWED - importers)
    assert not stale, f"no longer import the wiring, delete from WIRING_IMPORTERS_ALLOWED: {stale}"


def test_the_checker_finds_a_cycle_through_a_function_local_import(tmp_path: Path) -> None:
    """The checker itself: a cycle hidden in a function is found, a TYPE_CHECKING one is not."""
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text("from pkg import b\n")
    (root / "b.py").write_text("def f():\n    from pkg.a import x\n")
    (root / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import d\n"
    )
    (root / "d.py").write_text("from . import c\n")
    modules = module_files(root)
    graph = {name: imports_of(name, modules) for name in modules}
    assert graph["pkg.b"] == {"pkg.a"}
    assert graph["pkg.c"] == set()
    assert graph["pkg.d"] == {"pkg.c"}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]
