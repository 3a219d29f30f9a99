"""The house in layers (NNDF.LAYERS): every import of a product module, function-local ones and
the registry's by-name table included, goes to its own layer or a lower one; no modules import
each other in a circle; and the longest chain of modules importing one another stays short.

Imports inside functions count: they run later, but a circle or an upward edge hidden in a
function is still a circle or an upward edge (four circles got in that way before). Imports made
only for type checkers (`if TYPE_CHECKING:`) count for the layers and circles too; they run
never, so they do not lengthen a chain."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import ROOT

from NNDF import LAYERS

PACKAGES = ("NNDF", "GPT2", "OPT", "BLOOM", "LLAMA", "Seq2Seq", "T5", "BART", "Vision2Seq", "BLIP", "BERT", "VIT")
FAMILY_FRONT_FILES = ("frameworks", "onnxrt", "trt")   # a family folder's API classes (the demo's files)
MAX_CHAIN = 10
BY_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+):[A-Za-z_][A-Za-z0-9_]*$")


def module_files() -> dict[str, Path]:
    files = {"run": ROOT / "run.py"}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imported_modules(path: Path, known: set[str], typing: bool = True) -> set[str]:
    """Project modules `path` imports anywhere in it (module level, functions and, unless `typing` is
    False, `if TYPE_CHECKING:` blocks), and the modules a table names as "package.module:attribute"
    strings, which it imports by name."""
    tree = ast.parse(path.read_text())
    skipped = set()
    if not typing:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and (m := BY_NAME.match(node.value)):
            found.add(m[1])
    return found & known


def import_graph(typing: bool = True) -> dict[str, set[str]]:
    files = module_files()
    return {name: imported_modules(path, set(files), typing) - {name} for name, path in files.items()}


def layer_of(module: str) -> int:
    """Index into NNDF.LAYERS; family folders are "families", their frameworks/onnxrt/trt files "front"."""
    names = [name for name, _ in LAYERS]
    if module.split(".")[0] != "NNDF" and module != "run":
        return names.index("front" if module.split(".")[-1] in FAMILY_FRONT_FILES else "families")
    if module == "NNDF":
        return 0
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer of NNDF.LAYERS")


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


def longest_chain(graph: dict[str, set[str]]) -> list[str]:
    """The longest path of modules importing one another (the graph must have no circle)."""
    best: dict[str, list[str]] = {}

    def from_node(node):
        if node not in best:
            tails = [from_node(nxt) for nxt in graph[node]]
            best[node] = [node] + max(tails, key=len, default=[])
        return best[node]

    return max((from_node(n) for n in graph), key=len)


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_walk_sees_function_local_and_by_name_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('def f():\n    from NNDF.base import errors\nTABLE = {"X": "GPT2.GPT2ModelConfig:GPT2_FAMILY"}\n')
    assert imported_modules(module, {"NNDF.base.errors", "GPT2.GPT2ModelConfig"}) == {"NNDF.base.errors",
                                                                                        "GPT2.GPT2ModelConfig"}
    assert longest_chain({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"c"}}) == ["a", "b", "c"]
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from NNDF.base import errors\n")
    assert imported_modules(module, {"NNDF.base.errors"}) == {"NNDF.base.errors"}
    assert imported_modules(module, {"NNDF.base.errors"}, typing=False) == set()


def test_no_import_circle():
    graph = import_graph()
    assert "NNDF.runtime.cached_decoder" in graph and graph["NNDF.kinds.decoder_only.graphs"]   # the walk saw the modules
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_imports_never_run_up_a_layer():
    upward = [f"{a} ({LAYERS[layer_of(a)][0]}) -> {b} ({LAYERS[layer_of(b)][0]})"
              for a, targets in sorted(import_graph().items()) for b in sorted(targets) if layer_of(b) > layer_of(a)]
    assert not upward, "imports that run up a layer:\n" + "\n".join(upward)


def test_every_module_has_a_layer():
    for module in import_graph():
        layer_of(module)


def test_import_chains_are_short():
    chain = longest_chain(import_graph(typing=False))
    assert len(chain) <= MAX_CHAIN, f"{len(chain)} modules: " + " -> ".join(chain)
