"""`run`: the family's checkpoint.toml examples (or the user's), scored against their labels.

Format: `[FAMILY.all.VARIANT.all.NAME]` tables with `input` and `label`;
VARIANT `default` applies to every variant and a variant's own entry of the
same NAME overrides it. An output matches when it starts with the label
(surrounding whitespace ignored): decoder-only outputs include the prompt.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import toml

from NNDF.actions.common import identity, label, table
from NNDF.backends import Backend
from NNDF.config import RunConfig
from NNDF.data_checks import read_text, toml_table, toml_text
from NNDF.errors import UsageError
from NNDF.family import LoadedModel, ModelFamily


def load_examples(path: Path, family: str, variant: str) -> dict[str, dict]:
    try:
        data = toml.loads(read_text(path, "checkpoint file"))
    except toml.TomlDecodeError as e:
        raise UsageError(f"checkpoint file {path} is not valid TOML ({e})", "fix its syntax") from None
    tree = toml_table(toml_table(data.get(family, {}), family, path).get("all", {}), f"{family}.all", path)
    examples: dict[str, dict] = {}
    for scope in ("default", variant):
        where = f"{family}.all.{scope}"
        for name, ex in toml_table(toml_table(tree.get(scope, {}), where, path).get("all", {}),
                                   f"{where}.all", path).items():
            table = f"{where}.all.{name}"
            ex = toml_table(ex, table, path)
            examples[name] = {"input": toml_text(ex, "input", table, path), "label": toml_text(ex, "label", table, path)}
    if not examples:
        raise UsageError(f"{path} has no examples for {family} {variant}",
                         f"add tables named [{family}.all.default.all.NAME] or [{family}.all.{variant}.all.NAME]")
    return examples


def checkpoint_path(cfg: RunConfig, family: ModelFamily) -> Path:
    if cfg.checkpoint is not None:
        return cfg.checkpoint
    return Path(__import__(family.package).__file__).parent / "checkpoint.toml"


def run_backend(backend: Backend, loaded: LoadedModel, cfg: RunConfig, examples: dict[str, dict]) -> dict:
    names = list(examples)
    outputs, times = {}, []
    for i in range(0, len(names), cfg.batch_size):
        group = names[i:i + cfg.batch_size]
        prompts = [examples[n]["input"] for n in group]
        ids, mask = loaded.encode_prompts(prompts, cfg.use_mask, cfg.generation.max_new_tokens)
        runs = []
        for _ in range(max(1, cfg.timing.iterations)):
            start = time.perf_counter()
            out = backend.generate(ids, mask, cfg.generation)
            runs.append(time.perf_counter() - start)
        times.append(statistics.median(runs))
        for row, name in enumerate(group):
            text = loaded.output_text(examples[name]["input"], out.tokens[row])
            label = examples[name]["label"]
            outputs[name] = {"input": examples[name]["input"], "output": text, "label": label,
                             "match": text.strip().startswith(label.strip())}
    accuracy = sum(o["match"] for o in outputs.values()) / len(outputs)
    return {"examples": outputs, "accuracy": accuracy, "median_runtime_s": statistics.median(times)}


def run(cfg: RunConfig, loaded: LoadedModel, backends: list[Backend], family: ModelFamily) -> dict:
    examples = load_examples(checkpoint_path(cfg, family), family.name, loaded.variant)
    results = {b.name: {**identity(b), **run_backend(b, loaded, cfg, examples)} for b in backends}
    for b in backends:
        r = results[b.name]
        print(f"[{label(b)}] accuracy {r['accuracy']:.2f} over {len(examples)} examples, "
              f"median runtime {r['median_runtime_s'] * 1e3:.1f} ms per batch")
        for ex_name, ex in r["examples"].items():
            print(f"  {ex_name}: {'ok ' if ex['match'] else 'MISS'} {ex['output']!r}")
    return {"action": "run", "results": results}


def compare(cfg: RunConfig, loaded: LoadedModel, backends: list[Backend], family: ModelFamily) -> dict:
    examples = load_examples(checkpoint_path(cfg, family), family.name, loaded.variant)
    results = {b.name: {**identity(b), **run_backend(b, loaded, cfg, examples)} for b in backends}
    first = backends[0].name
    headers = ["example"] + [label(b) for b in backends]
    rows = []
    for ex in examples:
        ref = results[first]["examples"][ex]["output"]
        cells = []
        for b in backends:
            o = results[b.name]["examples"][ex]
            same = "" if b.name == first else (" =" if o["output"] == ref else " DIFFERS")
            cells.append(("match" if o["match"] else "miss") + same)
        rows.append([ex] + cells)
    rows.append(["accuracy"] + [f"{results[b.name]['accuracy']:.2f}" for b in backends])
    rows.append(["median ms"] + [f"{results[b.name]['median_runtime_s'] * 1e3:.1f}" for b in backends])
    print(table(headers, rows))
    if cfg.quantize is not None and first == "frameworks":
        for b in backends[1:]:
            same = sum(results[b.name]["examples"][ex]["output"] == results[first]["examples"][ex]["output"]
                       for ex in examples)
            delta = results[b.name]["accuracy"] - results[first]["accuracy"]
            results[b.name]["delta_to_fp32"] = {"same_outputs": same, "accuracy_delta": delta}
            print(f"{b.name} {cfg.quantize.scheme} against frameworks ({results[first]['precision']}): "
                  f"{same}/{len(examples)} outputs identical, accuracy {delta:+.2f}")
    return {"action": "compare", "results": results}
