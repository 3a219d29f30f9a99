"""No import circle: the modules' import-time graph (the imports each module runs when it is
loaded) must be acyclic, so any module imports on its own and nothing depends on import order.
Imports inside functions run later and are not edges here."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGES = ("NNDF", "GPT2", "OPT", "BLOOM", "LLAMA", "Seq2Seq", "T5", "BART", "Vision2Seq", "BLIP", "BERT", "VIT")


def module_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def top_level(statements):
    """Statements that run when the module is loaded: the body, and inside top-level `if` (but not
    `if TYPE_CHECKING:`) and `try` blocks."""
    for node in statements:
        yield node
        if isinstance(node, ast.If) and not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
            yield from top_level(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from top_level(node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body])


def import_time_edges(path: Path, known: set[str]) -> set[str]:
    """Project modules a module imports when it is loaded."""
    found = set()
    for node in top_level(ast.parse(path.read_text()).body):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found & known


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that ends where it starts, or None."""
    state: dict[str, str] = {}       # "open" while on the current path, "done" after

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle():
    files = module_files()
    graph = {name: import_time_edges(path, set(files)) - {name} for name, path in files.items()}
    assert "NNDF.cached_decoder" in graph and graph["NNDF.decoder_only"]     # the walk saw the modules
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)
