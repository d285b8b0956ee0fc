"""The house rules that a reader of one file cannot see: no import cycles.

The graph counts every import that can run, also those inside functions, and a
module that loads modules of a package by name (`importlib.import_module(
f"policies.{name}")`) counts as importing every module of that package: that is
what it does at run time. Imports under `if TYPE_CHECKING:` never run and name
types only; they are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("relay", "policies", "directory_sync")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                out[module_name(path)] = path
    return out


def _targets(name: str, modules: dict[str, Path]) -> set[str]:
    """The module `import a.b.c` depends on: a.b.c itself (its parent packages are run
    too, but depending on a package's contents is `from a.b import name`)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in modules:
            return {".".join(parts[:i])}
    return set()


def _dynamic_prefix(call: ast.Call) -> str | None:
    """'policies' for importlib.import_module(f"policies.{name}") and the like."""
    func = call.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if called not in ("import_module", "spec_from_file_location") or not call.args:
        return None
    arg = call.args[0]
    first = arg.values[0] if isinstance(arg, ast.JoinedStr) and arg.values else arg
    if isinstance(first, ast.Constant) and isinstance(first.value, str) and "." in first.value:
        return first.value.split(".")[0]
    return None


def _runnable(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under `if TYPE_CHECKING:`."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", None) == "TYPE_CHECKING":
                todo.extend(child.orelse)
                continue
            todo.append(child)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        for node in _runnable(tree):
            found: set[str] = set()
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found |= _targets(alias.name, modules)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")
                    base = base if is_package else base[:-1]
                    base = base[: len(base) - node.level + 1]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                for alias in node.names:  # `from pkg import module` or `from pkg import name`
                    found |= _targets(f"{prefix}.{alias.name}", modules)
            elif isinstance(node, ast.Call) and (package := _dynamic_prefix(node)):
                found |= {m for m in modules if m.split(".")[0] == package and m != package}
            graph[name] |= found - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_dynamic_and_local_imports():
    graph = import_graph()
    # relay.policyset loads policies by name: it counts as importing each of them
    assert {"policies.webmail", "policies.headers"} <= graph["relay.policyset"]
    # the CLI imports its command modules inside a function
    assert "relay.cli.archive" in graph["relay.cli"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_policies_import_nothing_above_them():
    """A policy never knows which front called it (DESIGN.md: dependencies point down)."""
    above = ("relay.smtp", "relay.milter", "relay.cli", "relay.engine", "relay.transaction",
             "relay.serve", "relay.policyset", "relay.inspection")
    graph = import_graph()
    for name, deps in graph.items():
        if name.split(".")[0] == "policies":
            bad = sorted(d for d in deps if d.startswith(above))
            assert not bad, f"{name} imports {bad}"
