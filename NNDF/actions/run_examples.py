"""`run` and `compare`: the checkpoint.toml examples, reported as the original demo did.

Per example and backend: the output, whether it matches the label exactly (the demo's rule,
newlines aside), the label's perplexity under teacher forcing (where the model can be
teacher-forced), and encoder / decoder / full latency at --percentile, measured with
--warmup/--number/--iterations/--duration. Each example is one batch of --batch-size rows
(a list input is cycled to it, as the demo did). The file format is in NNDF/models/examples.py.
"""

from __future__ import annotations

import math

import numpy as np

from NNDF.actions.action import Action
from NNDF.actions.benchmark import summarize
from NNDF.actions.reporting import identity, label, table
from NNDF.actions.scoring import MAX_PPL, batch_logits, score_sample
from NNDF.base.config import RunConfig
from NNDF.base.progress import progress
from NNDF.base.timing import measure
from NNDF.kinds.image_to_text.model import split_prompt
from NNDF.models.examples import Example, all_prompts, examples_for, outputs_match, variant_name
from NNDF.models.family import LoadedModel, ModelFamily
from NNDF.runtime.backends import Backend
from NNDF.runtime.memory import Workload

LATENCY_KEYS = ("full_latency_s", "decoder_latency_s", "encoder_latency_s")


def label_sequence(loaded: LoadedModel, prompt: str, label: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(sequence to score, encoder input or None) for a label, as the demo scored labels: a
    decoder-only model reads the label (which starts with the prompt); an encoder-decoder reads
    the prompt and is scored on start token + label, its final EOS left out; an image-to-text model
    reads the prompt's image and is scored on bos + the label (the whole caption)."""
    if loaded.reads_images:
        return loaded.caption_sequence({"image": split_prompt(prompt)[0], "text": label}, 1)
    tok = loaded.tokenizer
    ids = list(tok(label, truncation=True, max_length=loaded.max_positions)["input_ids"])
    if not loaded.model.config.is_encoder_decoder:
        return np.asarray(ids, np.int64), None
    if ids and ids[-1] == loaded.generation_defaults["eos_token_id"]:
        ids = ids[:-1]
    start = loaded.generation_defaults["decoder_start_token_id"]
    return np.asarray([start] + ids, np.int64), np.asarray(tok(prompt)["input_ids"], np.int64)


def label_log_perplexities(backend: Backend, loaded: LoadedModel, cfg: RunConfig, prompts: list[str],
                           labels: list[str]) -> list[float]:
    """Each row's mean cross-entropy over its label's tokens after the first, capped as the demo
    capped it; the rows go in as one batch (x beams), the shape the backend was built for."""
    pairs = [label_sequence(loaded, p, lab) for p, lab in zip(prompts, labels)]
    if any(len(seq) < 2 for seq, _ in pairs):
        return []   # a one-token label has nothing to predict
    logits = batch_logits(backend, loaded, pairs, 1, cfg.generation.num_beams, use_cache=False)
    return [score_sample(lg, seq, 1, [1])["seq_nll"] for lg, (seq, _) in zip(logits, pairs)]


def run_example(backend: Backend, loaded: LoadedModel, cfg: RunConfig, example: Example) -> dict:
    prompts, labels = example.rows(cfg.batch_size)
    ids, mask = loaded.encode_prompts(prompts, cfg.use_mask, cfg.generation.max_new_tokens)
    latencies, outs = measure(lambda: backend.generate(ids, mask, cfg.generation), cfg.timing)
    texts = [loaded.output_text(p, outs[-1].tokens[row]) for row, p in enumerate(prompts)]
    scored = example.labels != ()
    matches = [outputs_match(t, lab) for t, lab in zip(texts, labels)] if scored else []
    log_ppls = label_log_perplexities(backend, loaded, cfg, prompts, labels) if scored else []
    timing = summarize(latencies, outs, cfg, [o.start_s for o in outs] if loaded.times_encoder else [])
    one = (lambda rows: rows) if example.is_batch else (lambda rows: rows[0])
    log_ppl = float(np.mean(log_ppls)) if log_ppls else None
    return {"input": one(prompts), "output": one(texts), "label": one(labels), "match": all(matches) if scored else None,
            "accuracy": float(np.mean(matches)) if scored else None, "log_perplexity": log_ppl,
            "label_perplexity": None if log_ppl is None else min(math.exp(log_ppl), MAX_PPL), **timing}


def run_backend(backend: Backend, loaded: LoadedModel, cfg: RunConfig, family: ModelFamily) -> dict:
    examples = examples_for(cfg, family, loaded.variant, backend.name, identity(backend)["precision"])
    results = {name: run_example(backend, loaded, cfg, ex)
               for name, ex in progress(list(examples.items()), f"run [{backend.name}]")}
    log_ppls = [r["log_perplexity"] for r in results.values() if r["log_perplexity"] is not None]
    latency = {k: float(np.mean([r[k] for r in results.values()])) for k in LATENCY_KEYS
               if all(k in r for r in results.values())}
    accuracies = [r["accuracy"] for r in results.values() if r["accuracy"] is not None]
    return {**identity(backend), "examples": results,
            "accuracy": float(np.mean(accuracies)) if accuracies else None,   # over the labelled examples
            # the demo's summary: exp of the mean log-perplexity, capped
            "label_perplexity": min(math.exp(np.mean(log_ppls)), MAX_PPL) if log_ppls else None,
            "percentile": cfg.timing.percentiles[0], **latency}


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f}"


def _ppl(value: float | None) -> str:
    return _num(value, ".4g")


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _said(match: bool | None) -> str:
    return "no label" if match is None else ("match" if match else "MISS")


def _short(text, limit: int = 40) -> str:
    text = " | ".join(text) if isinstance(text, list) else text
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit // 2 - 2] + " ... " + text[-(limit // 2 - 3):]


class RunExamples(Action):
    """`run` for generating models: the checkpoint.toml examples, scored and timed per backend."""

    def check_inputs(self, cfg: RunConfig, family) -> None:
        all_prompts(cfg, family, variant_name(cfg, family))

    def workload(self, cfg: RunConfig, family, loaded) -> Workload:
        longest = max(len(loaded.tokenizer(p)["input_ids"]) for batch in all_prompts(cfg, family, loaded.variant)
                      for p in batch)
        return Workload(cfg.batch_size * cfg.generation.num_beams, longest, cfg.generation.max_new_tokens)

    def check_loaded(self, cfg: RunConfig, family, loaded) -> None:
        super().check_loaded(cfg, family, loaded)
        for batch in all_prompts(cfg, family, loaded.variant):   # each example is one batch
            loaded.encode_prompts(batch, cfg.use_mask, cfg.generation.max_new_tokens)

    def run(self, cfg: RunConfig, family, loaded, backends: list[Backend]) -> dict:
        return {"action": "run", "results": {b.name: run_backend(b, loaded, cfg, family) for b in backends}}

    def report(self, cfg: RunConfig, loaded, result: dict, backends: list[Backend]) -> None:
        p = cfg.timing.percentiles[0]
        for b in backends:
            r = result["results"][b.name]
            enc = f", encoder {_ms(r['encoder_latency_s'])} ms" if "encoder_latency_s" in r else ""
            print(f"[{label(b)}] accuracy {_num(r['accuracy'], '.2f')} over {len(r['examples'])} examples, label "
                  f"perplexity {_ppl(r['label_perplexity'])}; p{p} full {_ms(r['full_latency_s'])} ms, decoder step "
                  f"{_ms(r['decoder_latency_s'])} ms{enc}")
            for ex_name, ex in r["examples"].items():
                print(f"  {ex_name}: {_said(ex['match']):<8} ppl={_ppl(ex['label_perplexity'])} "
                      f"full={_ms(ex['full_latency_s'])} ms  {ex['output']!r}")


class Compare(RunExamples):
    """`compare`: the same examples on every backend, side by side as the demo's tables put them;
    under --quantize, each quantized backend's outputs and accuracy against frameworks (fp32)."""

    def run(self, cfg: RunConfig, family, loaded, backends: list[Backend]) -> dict:
        results = {b.name: run_backend(b, loaded, cfg, family) for b in backends}
        first = backends[0].name
        if cfg.quantize is not None and first == "frameworks":
            for b in backends[1:]:
                shared = _shared_examples(results, b.name, first)
                same = sum(results[b.name]["examples"][n]["output"] == results[first]["examples"][n]["output"]
                           for n in shared)
                acc, ref = results[b.name]["accuracy"], results[first]["accuracy"]
                delta = None if acc is None or ref is None else acc - ref
                results[b.name]["delta_to_fp32"] = {"same_outputs": same, "accuracy_delta": delta}
        return {"action": "compare", "results": results}

    def report(self, cfg: RunConfig, loaded, result: dict, backends: list[Backend]) -> None:
        results, first = result["results"], backends[0].name
        has_encoder = all("encoder_latency_s" in r for r in results.values())
        p = cfg.timing.percentiles[0]

        # per example, one row per backend (the demo's per-input table)
        headers = ["example", "backend", "match", "label ppl", f"full p{p} (ms)", "decoder step (ms)"]
        headers += ["encoder (ms)"] if has_encoder else []
        headers += ["output", f"same as {first}"]
        rows = []
        for ex_name in _example_names(results):
            reference = results[first]["examples"].get(ex_name, {}).get("output")
            for b in backends:
                ex = results[b.name]["examples"].get(ex_name)
                if ex is None:   # a framework-specific table can add an example for one backend only
                    continue
                row = [ex_name, b.name, _said(ex["match"]), _ppl(ex["label_perplexity"]),
                       _ms(ex["full_latency_s"]), _ms(ex["decoder_latency_s"])]
                row += [_ms(ex.get("encoder_latency_s"))] if has_encoder else []
                row += [_short(ex["output"]),
                        "-" if b.name == first else ("yes" if ex["output"] == reference else "DIFFERS")]
                rows.append(row)
        print(table(headers, rows))
        print()

        # the latency summary across backends (the demo's mean over examples of each part)
        headers = ["backend", "device", "precision", "accuracy", "label ppl", "full (s)", "decoder step (s)"]
        headers += ["encoder (s)"] if has_encoder else []
        summary = []
        for name, r in results.items():
            row = [name, r["device"], r["precision"], _num(r["accuracy"], ".2f"), _ppl(r["label_perplexity"]),
                   f"{r['full_latency_s']:.4f}", f"{r['decoder_latency_s']:.5f}"]
            row += [f"{r['encoder_latency_s']:.5f}"] if has_encoder else []
            summary.append(row)
        print(table(headers, summary))
        for name, r in list(results.items())[1:]:
            print(f"{name} is {results[first]['full_latency_s'] / r['full_latency_s']:.2f}x {first} end to end")
        for b in backends[1:]:
            delta = results[b.name].get("delta_to_fp32")
            if delta is not None:
                acc = delta["accuracy_delta"]
                print(f"{b.name} {cfg.quantize.scheme} against frameworks ({results[first]['precision']}): "
                      f"{delta['same_outputs']}/{len(_shared_examples(results, b.name, first))} outputs identical"
                      + ("" if acc is None else f", accuracy {acc:+.2f}"))


def _example_names(results: dict) -> list[str]:
    return list(dict.fromkeys(n for r in results.values() for n in r["examples"]))


def _shared_examples(results: dict, name: str, first: str) -> list[str]:
    return [n for n in _example_names(results) if n in results[name]["examples"] and n in results[first]["examples"]]
