"""A decoder-only family is a folder of declarations over NNDF: at most about 60 lines of Python
code each (docstrings, comments and blank lines not counted; configs and checkpoint.toml are data).
If repetition creeps back into the family folders, this fails."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

from conftest import ROOT

LIMIT = 60


def code_lines(path: Path) -> int:
    source = path.read_text()
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(node):
            first = node.body[0]
            docstrings.update(range(first.lineno, first.end_lineno + 1))
    lines: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines - docstrings)


def test_code_lines_counts_code_only(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text('"""Doc\nstring."""\n\n# comment\nx = 1\n\n\ndef f():\n    """Doc."""\n    return (x +\n            1)\n')
    assert code_lines(sample) == 4   # x = 1, def, and the two-line return


@pytest.mark.parametrize("family", ["GPT2", "OPT", "BLOOM", "LLAMA"])
def test_a_decoder_only_family_is_about_sixty_lines(family):
    total = sum(code_lines(p) for p in (ROOT / family).glob("*.py"))
    assert 0 < total <= LIMIT, f"{family}/ has {total} lines of Python code"
