"""Layers point one way: no import cycle inside ``sidecar/``; the store imports nothing above it.

The graph is read from the source with ``ast`` (nothing is imported, so a cycle that Python
happens to tolerate today is still found). Edges:

* every ``import`` / ``from … import`` at module level **and inside functions**: a lazy import
  that closes a loop is still a loop between layers (it only moves the failure from start-up to
  the first call, and hides the knot from the next reader). Lazy imports that exist for start-up
  speed (llama_cpp, pypdf …) point down or out of the package and are unaffected.
* **not** imports under ``if TYPE_CHECKING:``: they never run, and annotations may name a type
  from above without making the layers depend on each other.
* ``from package import name`` points at ``package.name`` when that is a module, otherwise at the
  package's ``__init__`` (the parent packages a dotted import also runs are not edges: a
  package's ``__init__`` importing its own modules is not a loop with them).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sidecar"


def _module_files(package: Path = PACKAGE) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in package.rglob("*.py"):
        parts = list(f.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(tree: ast.AST, package: str) -> Iterable[str]:
    """Dotted names an ``ast`` tree imports, TYPE_CHECKING blocks left out."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                stack.extend(child.orelse)
                continue
            if isinstance(child, ast.Import):
                yield from (a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                for a in child.names:
                    yield f"{module}.{a.name}"  # resolves to the package when not a module
            stack.append(child)


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the ``sidecar`` modules it imports (itself left out)."""

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = {resolve(name) for name in _imported_names(tree, package)}
        graph[mod] = {t for t in targets if t is not None and t != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in graph:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _describe(graph: dict[str, set[str]], component: list[str]) -> str:
    members = set(component)
    return "\n".join(f"  {m} -> {', '.join(sorted(graph[m] & members))}" for m in component)


def _closure(graph: dict[str, set[str]], roots: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(graph.get(m, ()))
    return seen


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(_module_files())


def test_no_import_cycle_inside_sidecar(graph: dict[str, set[str]]) -> None:
    found = cycles(graph)
    assert not found, "import cycles in sidecar/:\n" + "\n\n".join(
        _describe(graph, c) for c in found)


#: What the store may reach, directly or not: its own modules and the bottom layer (the domain
#: definitions, clocks, errors, paths and settings, redaction, rate limits, failpoints).
STORE_MAY_REACH = {
    "sidecar", "sidecar.domain", "sidecar.clock", "sidecar.errors", "sidecar.diskfull",
    "sidecar.ratelimit", "sidecar.failpoints", "sidecar.paths", "sidecar.settings",
    "sidecar.redaction", "sidecar.schedule",
}


def test_store_imports_nothing_above_it(graph: dict[str, set[str]]) -> None:
    store = [m for m in graph if m == "sidecar.store" or m.startswith("sidecar.store.")]
    reached = _closure(graph, store) - set(store)
    above = sorted(reached - STORE_MAY_REACH)
    assert not above, f"the store reaches above itself: {above}"


def test_domain_is_below_store_and_extractors(graph: dict[str, set[str]]) -> None:
    """Tables and agent definitions import neither the store nor the extractors."""
    reached = _closure(graph, ["sidecar.domain"])
    above = {m for m in reached
             if m.startswith(("sidecar.store", "sidecar.extractors", "sidecar.sources",
                              "sidecar.readers", "sidecar.protocol"))}
    assert not above, f"sidecar.domain reaches {sorted(above)}"
    assert "sidecar.domain" in graph["sidecar.store.agents"]
    assert "sidecar.domain" in graph["sidecar.extractors.base"]


def test_the_test_client_is_kept_apart(graph: dict[str, set[str]]) -> None:
    """``sidecar/client.py`` is for tests and tools: the daemon never imports it."""
    users = sorted(m for m, edges in graph.items() if "sidecar.client" in edges)
    assert users == [], f"daemon modules import the test client: {users}"


#: The run services: built in one place (sidecar/services.py) for the daemon, ``run``, ``extract``.
SERVICES = {"Runner", "Delivery", "ExtractorPool", "Accounts"}


def test_the_run_services_are_wired_in_one_place() -> None:
    builders: dict[str, list[str]] = {}
    for mod, path in _module_files().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in SERVICES:
                    builders.setdefault(mod, []).append(name)
    assert set(builders) == {"sidecar.services"}, builders


def test_each_table_family_is_written_by_its_own_store_module() -> None:
    """Run accounting lives in store/runs.py alone: no other module writes the runs table
    (the outbox's settle credits a run through runs.credit_run, in its transaction)."""
    import re

    writes = re.compile(r"\b(?:UPDATE|INSERT\s+(?:OR\s+\w+\s+)?INTO|DELETE\s+FROM)\s+runs\b", re.I)
    writers = {mod for mod, path in _module_files().items()
               if writes.search(path.read_text(encoding="utf-8"))}
    assert writers == {"sidecar.store.runs"}, writers


# -- the checker itself: it must see a loop when there is one -------------------------------


def _write(tmp: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        p = tmp / "pkg" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return _module_files(tmp / "pkg")


def test_checker_sees_a_loop_closed_inside_a_function(tmp_path: Path) -> None:
    mods = _write(tmp_path, {
        "__init__.py": "",
        "a.py": "from pkg.b import x\n",
        "b.py": "x = 1\ndef f():\n    from pkg import a\n    return a\n",
    })
    assert cycles(import_graph(mods)) == [["pkg.a", "pkg.b"]]


def test_checker_sees_a_relative_three_module_loop(tmp_path: Path) -> None:
    mods = _write(tmp_path, {
        "__init__.py": "",
        "sub/__init__.py": "",
        "sub/a.py": "from . import b\n",
        "sub/b.py": "from .c import y\n",
        "sub/c.py": "import pkg.sub.a\ny = 1\n",
    })
    assert cycles(import_graph(mods)) == [["pkg.sub.a", "pkg.sub.b", "pkg.sub.c"]]


def test_checker_ignores_type_checking_and_a_package_importing_its_modules(
        tmp_path: Path) -> None:
    mods = _write(tmp_path, {
        "__init__.py": "",
        "p/__init__.py": "from pkg.p.a import A\n",
        "p/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.q import Q\n"
                  "class A: ...\n",
        "q.py": "from pkg.p import A\nclass Q: ...\n",
    })
    assert cycles(import_graph(mods)) == []
