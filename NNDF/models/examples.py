"""checkpoint.toml: the examples `run` and `compare` score, in the original demo's format.

    [FAMILY.<framework>.<variant>.<precision>.<name>]
    input = "..."            # or a list of strings: one batch
    label = "..."            # the expected output (a list to go with a list input); without
                             # one the example runs unscored

<framework> is `all` or a backend (`frameworks`, also spelt `native` as in the demo, `onnxrt`,
`trt`); <variant> is `default` or a variant's name or hub id, matched exactly; <precision> is
`all`, `fp32`, `fp16`, `int8` or `int4`. The examples are the names under
[FAMILY.all.default.all]; a table for a specific framework, variant or precision overrides
fields of the example of the same name (often just `label`), applied in the demo's order:
framework, then variant, then precision, each from wildcard to specific. A name that only a
specific table defines is an example there, if it has both fields. `skip = true` leaves an
example out. Text goes through the demo's normalisation: curly quotes straightened and a
literal backslash-n made a newline (the demo's files write newlines that way).
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

import toml

from NNDF.base.errors import UsageError
from NNDF.base.text import normalize_text
from NNDF.models.data_checks import read_text, toml_table, type_name

ANY_FRAMEWORK, ANY_VARIANT, ANY_PRECISION = "all", "default", "all"
FRAMEWORK_KEYS = {"frameworks": ("frameworks", "native"), "onnxrt": ("onnxrt",), "trt": ("trt",)}
PRECISIONS = ("fp32", "fp16", "int8", "int4")
FIELD_TYPES = {"input": "a string or a list of strings", "label": "a string or a list of strings", "skip": "a boolean",
               "context": "a string or a list of strings"}   # context: question-answering encoders


@dataclass(frozen=True)
class Example:
    name: str
    inputs: tuple[str, ...]      # one row, or the rows of one batch (a list input)
    labels: tuple[str, ...]      # empty: no label for this variant, so nothing to score
    is_batch: bool               # the file gave a list: report per row
    contexts: tuple[str, ...] = ()   # question answering: the passage each input asks about

    def rows(self, batch_size: int) -> tuple[list[str], list[str | None]]:
        """The demo's batching: a string fills the batch; a list is cycled (or cut) to it."""
        return _cycle(self.inputs, batch_size), _cycle(self.labels or (None,), batch_size)

    def context_rows(self, batch_size: int) -> list[str | None]:
        return _cycle(self.contexts or (None,), batch_size)


def outputs_match(output: str, label: str) -> bool:
    """The demo's exact match: equal once newlines (real or written as \\n) and escaped quotes are dropped."""
    def canonical(text: str) -> str:
        return text.replace("\\n", "").replace("\n", "").replace('\\\\"', '"').replace('\\"', '"')
    return canonical(output) == canonical(label)


def read(path: Path) -> dict:
    try:
        return toml.loads(read_text(path, "checkpoint file"))
    except toml.TomlDecodeError as e:
        raise UsageError(f"checkpoint file {path} is not valid TOML ({e})", "fix its syntax") from None


def load_examples(path: Path, family: str, backend: str, variant_names: tuple[str, ...], precision: str
                  ) -> dict[str, Example]:
    """The examples one backend runs: the file checked whole, then its tables merged for this
    backend, variant (any of its names: short name, hub id) and precision."""
    data = read(path)
    tree = _checked_tree(data, path, family)
    frameworks = (ANY_FRAMEWORK, *FRAMEWORK_KEYS[backend])
    variants = (ANY_VARIANT, *dict.fromkeys(n for n in variant_names if n))
    precisions = (ANY_PRECISION, precision)
    merged: dict[str, dict] = {}
    where: dict[str, str] = {}
    for fw, var, prec in itertools.product(frameworks, variants, precisions):
        for name, fields in tree.get(fw, {}).get(var, {}).get(prec, {}).items():
            merged[name] = {**merged.get(name, {}), **fields}
            where.setdefault(name, _table(family, fw, var, prec, name))
    examples = {}
    for name, fields in merged.items():
        if fields.get("skip", False):
            continue
        if "input" not in fields:
            raise UsageError(f"{path}: [{where[name]}] has no input",
                             f"add it there or in [{_table(family, ANY_FRAMEWORK, ANY_VARIANT, ANY_PRECISION, name)}]")
        # The demo's BLOOM file labels its examples per hub variant only: without a label for
        # this variant an example still runs and reports its output, unscored.
        inputs, labels = _texts(fields["input"]), _texts(fields.get("label", []))
        batch = isinstance(fields["input"], list) or isinstance(fields.get("label"), list)
        if batch and labels and len(inputs) != len(labels):
            raise UsageError(f"{path}: [{where[name]}] has {len(inputs)} inputs but {len(labels)} labels",
                             "give one label per input")
        examples[name] = Example(name, inputs, labels, batch, _texts(fields.get("context", [])))
    if not examples:
        raise UsageError(f"{path} has no examples for {family} {variant_names[0]}",
                         f"add tables named [{family}.all.default.all.NAME] (or for {variant_names[0]})")
    return examples


def _checked_tree(data: dict, path: Path, family: str) -> dict:
    """data[family] after checking every table in the file: one line naming the first bad one."""
    for top in data:
        if top != family:
            raise UsageError(f"{path}: table [{top}...] is for {top}, not {family}",
                             f"run it with the {top} family, or name the tables [{family}.all.default.all.NAME]")
    tree = toml_table(data.get(family, {}), family, path)
    for fw, variants in tree.items():
        toml_table(variants, _table(family, fw), path)
        if fw != ANY_FRAMEWORK and not any(fw in keys for keys in FRAMEWORK_KEYS.values()):
            raise UsageError(f"{path}: unknown framework '{fw}' in [{family}.{fw}...]",
                             f"use all, {', '.join(k for keys in FRAMEWORK_KEYS.values() for k in keys)}")
        for var, precisions in variants.items():
            toml_table(precisions, _table(family, fw, var), path)
            for prec, names in list(precisions.items()):
                if prec not in (ANY_PRECISION, *PRECISIONS):
                    if isinstance(names, dict) and names and set(names) <= set(FIELD_TYPES):
                        # The demo's BART file has one such table ([BART.native.VARIANT.NAME]): the demo
                        # looked for a precision level there and never applied it. Neither do we.
                        print(f"note: {path}: [{_table(family, fw, var, prec)}] has no precision level "
                              f"([{family}.framework.variant.precision.name]); ignored, as the demo did",
                              file=sys.stderr)
                        del precisions[prec]
                        continue
                    raise UsageError(f"{path}: unknown precision '{prec}' in [{_table(family, fw, var, prec)}...]",
                                     f"use all, {', '.join(PRECISIONS)}")
                for name, fields in toml_table(names, _table(family, fw, var, prec), path).items():
                    _check_fields(fields, path, _table(family, fw, var, prec, name))
    return tree


def _check_fields(fields, path: Path, table: str) -> None:
    for key, value in toml_table(fields, table, path).items():
        if key not in FIELD_TYPES:
            raise UsageError(f"{path}: [{table}] has an unknown key '{key}'", f"use {', '.join(FIELD_TYPES)}")
        ok = isinstance(value, bool) if key == "skip" else (
            isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(v, str) for v in value)))
        if not ok:
            raise UsageError(f"{path}: [{table}] needs '{key}' as {FIELD_TYPES[key]}, but it is {type_name(value)}",
                             f'write it as {key} = "..."' if key != "skip" else "write skip = true")


def _table(*parts: str) -> str:
    """A table name as TOML writes it: parts with dots or slashes quoted."""
    return ".".join(p if p.replace("-", "").replace("_", "").isalnum() else f'"{p}"' for p in parts)


def _texts(value) -> tuple[str, ...]:
    return tuple(normalize_text(v) for v in ([value] if isinstance(value, str) else value))


def _cycle(items: tuple[str, ...], n: int) -> list[str]:
    return [items[i % len(items)] for i in range(n)]


def checkpoint_path(cfg, family) -> Path:
    """--checkpoint, or the family's own checkpoint.toml."""
    if cfg.checkpoint is not None:
        return cfg.checkpoint
    return family.folder / "checkpoint.toml"


def examples_for(cfg, family, variant: str, backend: str, precision: str) -> dict[str, Example]:
    """The examples one backend runs: the checkpoint's tables for its framework, this variant
    (by name or hub id) and its precision."""
    listed = family.find_variant(variant)
    names = (variant, listed.hub_id if listed is not None else None)
    return load_examples(checkpoint_path(cfg, family), family.name, backend, names, precision)


def all_prompts(cfg, family, variant: str) -> list[list[str]]:
    """Every batch of prompts the run will generate from, for checks made before any backend exists."""
    return [ex.rows(cfg.batch_size)[0] for backend in cfg.backends
            for ex in examples_for(cfg, family, variant, backend, cfg.graph_precision).values()]


def variant_name(cfg, family) -> str:
    """The variant whose examples a run reads, before the model is loaded: a listed variant's
    short name (cfg may name it by hub id), or the unlisted id / --torch-dir name as given."""
    listed = None if cfg.torch_dir is not None else family.find_variant(cfg.variant)
    return cfg.variant if listed is None else listed.name
