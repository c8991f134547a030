"""The package's import graph has no cycle: no module imports, directly or through others, a
module that imports it. Every import counts, those inside functions too (they run as soon as the
function does); only ``if TYPE_CHECKING:`` blocks, which never run, are left out."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "crt_repro"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(tree: ast.AST, name: str, is_package: bool):
    """The crt_repro modules a module's import statements name (``from a import b``: a.b if it is a
    module, else a), outside ``if TYPE_CHECKING:``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}".rstrip(".")
            yield from (f"{base}.{a.name}" for a in node.names)
            yield base


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        # Importing a.b.c runs a and a.b first, unless the importer is inside them (already run).
        own = {name.rsplit(".", i)[0] for i in range(name.count(".") + 1)}
        deps = set()
        for target in imported_names(ast.parse(path.read_text()), name, path.name == "__init__.py"):
            parts = target.split(".")
            deps |= {m for i in range(1, len(parts) + 1) if (m := ".".join(parts[:i])) in paths and m not in own}
        graph[name] = deps
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of the graph (its modules in import order, the first repeated at the end), or []."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str]:
        state[m] = "open"
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        state[m] = "done"
        stack.pop()
        return []

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return []


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "crt_repro.model_specs" in graph["crt_repro.config"]  # the graph sees imports
    assert not cycle(graph), " -> ".join(cycle(graph))


def test_the_cycle_finder_finds_one():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) == []


def test_config_and_the_specs_import_no_torch():
    """The workflow plans runs (configs, run ids, specs) without torch."""
    code = ("import sys, crt_repro.config, crt_repro.model_specs, crt_repro.plan; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
