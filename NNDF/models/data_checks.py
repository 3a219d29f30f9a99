"""Checks of the user's data files (JSONL datasets, checkpoint TOML).

A value of the wrong type is one error naming the line or table it is in, never
a silently stringified "None" or "[1, 2]" that then scores as a confident wrong
answer. The checkpoint loader calls `toml_table` for every level it walks and
`toml_text` for every field it reads, whatever its table layout.
"""

from __future__ import annotations

import json
from pathlib import Path

from NNDF.base.errors import UsageError

_TYPE_NAMES = {dict: "a table", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
               float: "a number", type(None): "null"}


def type_name(value) -> str:
    return next((name for t, name in _TYPE_NAMES.items() if type(value) is t), type(value).__name__)


def read_text(path: Path, what: str) -> str:
    """A user's text file, UTF-8 with or without a byte-order mark, or one error line."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {what} {path}: {getattr(e, 'strerror', None) or e}",
                         "pass a readable UTF-8 file") from None


def toml_table(value, where: str, path: Path) -> dict:
    """`value` if it is a TOML table; `where` is its dotted name, e.g. GPT2.all.default."""
    if not isinstance(value, dict):
        raise UsageError(f"{path}: [{where}] must be a table, not {type_name(value)}",
                         "see the family's checkpoint.toml for the layout")
    return value


def toml_text(table: dict, field: str, where: str, path: Path) -> str:
    """The string `field` of the table `where`."""
    value = table.get(field)
    if not isinstance(value, str):
        got = "missing" if field not in table else f"{type_name(value)}, not a string"
        raise UsageError(f"{path}: [{where}] needs '{field}' as a string, but it is {got}",
                         f'write it as {field} = "..."')
    return value


def read_jsonl(path: Path, expect: str = "one JSON object per line") -> list[tuple[int, dict]]:
    """(line number, object) of every non-blank line of a --dataset-path file, or one error line
    naming the first line that is not a JSON object (`expect` says what a line should hold)."""
    rows = []
    for number, line in enumerate(read_text(path, "--dataset-path").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict):
            raise UsageError(f"{path} line {number} is not a JSON object", f"write {expect}")
        rows.append((number, row))
    return rows


def jsonl_texts(path: Path, field: str = "text") -> list[str]:
    """The string `field` of every object in a JSONL file (blank lines skipped)."""
    texts = []
    for number, row in read_jsonl(path, f'LAMBADA\'s format: one {{"{field}": ...}} object per line'):
        if field not in row:
            raise UsageError(f"{path} line {number} is not a JSON object with a \"{field}\" field",
                             f'use LAMBADA\'s format: one {{"{field}": ...}} object per line')
        if not isinstance(row[field], str):
            raise UsageError(f"{path} line {number}: \"{field}\" is {type_name(row[field])}, not a string",
                             "every sample's text must be a JSON string")
        texts.append(row[field])
    if not texts:
        raise UsageError(f"{path} holds no samples")
    return texts
