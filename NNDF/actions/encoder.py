"""run / compare / accuracy / benchmark / chat for encoder families (BERT, DistilBERT, ViT).

The same five actions as for generating models, with one forward pass where those generate:
- run / compare: the checkpoint.toml examples; the output is the predicted class name, the
  answer span, the entity list ("Anna (PER), Paris (LOC)") or the top-1 image class, matched
  exactly against the label; per example latency at --percentile and samples/s;
- accuracy: the task's metric on --dataset-path or the family's shipped sample (the first
  --num-samples rows): classification accuracy, QA exact match and F1, NER entity F1, image
  top-1/top-5, embeddings' cosine agreement with PyTorch; with --quantize, each metric's change
  against frameworks (fp32);
- benchmark: seeded random inputs of --input-seq-len tokens (or random pixels) at --batch-size,
  or at each size of --batch-sweep: latency and samples/s, and each backend's largest output
  difference from the first backend's;
- chat: each line classified (text or an image path); question answering takes a context
  first, then questions ("context: ..." starts a new one, "QUESTION ||| CONTEXT" asks inline).

JSON uses the generating actions' plain names (device, precision, accuracy, percentile ...),
with latency_s and samples_per_second per backend.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from NNDF.actions.action import Action
from NNDF.actions.console import EXIT_WORDS, as_text, read_line
from NNDF.actions.reporting import identity, label, megabytes, settings_dict, table
from NNDF.base.config import RunConfig
from NNDF.base.errors import UsageError
from NNDF.base.progress import progress, status
from NNDF.base.timing import measure, percentile
from NNDF.kinds.encoder_only.answers import NO_ENTITIES, predict
from NNDF.kinds.encoder_only.backends import EncoderBackend, TorchEncoder
from NNDF.kinds.encoder_only.data import QA_SEPARATOR, dataset, parse_line
from NNDF.kinds.encoder_only.graphs import image_positions
from NNDF.kinds.encoder_only.inputs import encode, random_batch
from NNDF.kinds.encoder_only.metrics import PRIMARY_METRIC, cosine, score
from NNDF.kinds.encoder_only.model import EncoderModel
from NNDF.kinds.encoder_only.tasks import Task
from NNDF.models.data_checks import read_jsonl
from NNDF.models.examples import all_prompts, examples_for, variant_name
from NNDF.runtime import memory
from NNDF.runtime.peak_memory import PeakMemory
from NNDF.runtime.placement import framework_placement

SAME_EMBEDDING = 0.999     # cosine above which two backends' embeddings count as the same answer


def sample_path(family, loaded: EncoderModel) -> Path:
    """The family's shipped sample of the loaded model's task (accuracy without --dataset-path)."""
    return family.folder / family.samples[loaded.task]


class EncoderAction(Action):
    """What the five encoder actions share: the checks before and after loading, and the memory
    estimate (no cache, no vocabulary logits in an encoder)."""

    def check_inputs(self, cfg: RunConfig, family) -> None:
        """Before loading: an image goes to an image model."""
        image_family = any(layout.image_input for layout in family.layouts.values())
        if cfg.image is not None and not image_family:
            raise UsageError(f"--image {cfg.image} was given, but {family.name} is a text family",
                             "drop --image, or use an image family such as VIT")

    def memory(self, cfg: RunConfig, family, loaded: EncoderModel) -> memory.MemoryEstimate:
        """Peak host memory: weights, a copy per compiled session, one layer's attention scores and
        the hidden states of the largest batch."""
        config = loaded.config
        weights = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
        on_gpu = tuple(b for b in cfg.backends if not memory.runs_on_host(b, cfg))
        compiled = [b for b in cfg.backends if b not in on_gpu and b != "frameworks"]
        sessions = int(len(compiled) * weights * (0.5 if cfg.fp16 else 1.0))
        rows = max((cfg.batch_size, *cfg.batch_sweep))
        seq = image_positions(config) if loaded.is_image else min(self.sequence_length(cfg, loaded), loaded.max_positions)
        heads, hidden = config.num_attention_heads, config.hidden_size
        wide = max(hidden, getattr(config, "intermediate_size", 0) or getattr(config, "hidden_dim", 0))
        # one layer's scores, and a few (rows, seq, feed-forward width) activations, counted as attention
        activations = rows * heads * seq * seq * 4 + rows * seq * wide * 4 * 3
        if len(on_gpu) == len(cfg.backends):
            activations = 0
        return memory.MemoryEstimate(weights, sessions, 0, activations, 0, rows, seq, on_gpu)

    def sequence_length(self, cfg: RunConfig, loaded: EncoderModel) -> int:
        """The longest text a batch holds: any the model takes, unless the action fixes it."""
        return loaded.max_positions


# --------------------------------------------------------------------------- run / compare
def examples(cfg: RunConfig, family, loaded: EncoderModel, backend: str, precision: str) -> list[tuple]:
    """(name, the example dicts of one batch, their labels or None, whether the file gave a list)
    for one backend; --image replaces the checkpoint's examples with that image, unscored."""
    if cfg.image is not None:
        return [("image", [{"image": str(cfg.image)}] * cfg.batch_size, None, False)]

    found = []
    for name, ex in examples_for(cfg, family, loaded.variant, backend, precision).items():
        inputs, labels = ex.rows(cfg.batch_size)
        rows = [parse_line(loaded, text, context) for text, context in zip(inputs, ex.context_rows(cfg.batch_size))]
        found.append((name, rows, labels if ex.labels else None, ex.is_batch))
    return found


def _timed(backend: EncoderBackend, feed: dict, cfg: RunConfig) -> tuple[list[float], dict]:
    latencies, outs = measure(lambda: backend.forward(feed), cfg.timing)
    return latencies, outs[-1]


def run_backend(cfg: RunConfig, family, loaded: EncoderModel, backend: EncoderBackend) -> dict:
    results = {}
    p = cfg.timing.percentiles[0]
    for name, rows, labels, is_batch in progress(examples(cfg, family, loaded, backend.name, backend.precision), f"run [{backend.name}]"):
        batch = encode(loaded, rows)
        latencies, outputs = _timed(backend, batch.feed, cfg)
        answers = predict(loaded, batch, outputs)
        texts = [a["label"] for a in answers]
        matches = [t == lab for t, lab in zip(texts, labels)] if labels is not None else []
        one = (lambda r: r) if is_batch else (lambda r: r[0])
        shown = [r.get("text") or r.get("image") or r.get("question") for r in rows]
        latency = percentile(latencies, p)
        results[name] = {"input": one(shown), "output": one(texts), "label": one(labels) if labels else None,
                         "match": all(matches) if labels is not None else None,
                         "accuracy": float(np.mean(matches)) if labels is not None else None,
                         "answers": one(answers), "latency_s": latency,
                         "samples_per_second": len(rows) / latency if latency > 0 else float("nan")}
        if loaded.task is Task.QUESTION_ANSWERING:
            results[name]["context"] = one([r["context"] for r in rows])
    scored = [r["accuracy"] for r in results.values() if r["accuracy"] is not None]
    latency = float(np.mean([r["latency_s"] for r in results.values()]))
    return {**identity(backend), "task": loaded.task.value, "examples": results,
            "accuracy": float(np.mean(scored)) if scored else None, "percentile": p, "latency_s": latency,
            "samples_per_second": float(np.mean([r["samples_per_second"] for r in results.values()]))}


def _same(loaded: EncoderModel, a: dict, b: dict) -> bool:
    if loaded.task is Task.EMBEDDINGS:
        return cosine(np.asarray(a["embedding"]), np.asarray(b["embedding"])) >= SAME_EMBEDDING
    return a["label"] == b["label"]


def _short(text, limit: int = 48) -> str:
    text = " | ".join(map(str, text)) if isinstance(text, list) else str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class EncoderRun(EncoderAction):
    """`run` for encoders: the checkpoint.toml examples (or --image), answered and timed per backend."""

    def check_inputs(self, cfg: RunConfig, family) -> None:
        super().check_inputs(cfg, family)
        if cfg.image is None:
            all_prompts(cfg, family, variant_name(cfg, family))

    def check_loaded(self, cfg: RunConfig, family, loaded: EncoderModel) -> None:
        super().check_loaded(cfg, family, loaded)
        for backend in cfg.backends:
            for _, rows, _, _ in examples(cfg, family, loaded, backend, cfg.graph_precision):
                encode(loaded, rows)     # a QA input without context, an unreadable image: one line now

    def run(self, cfg: RunConfig, family, loaded: EncoderModel, backends: list[EncoderBackend]) -> dict:
        results = {b.name: run_backend(cfg, family, loaded, b) for b in backends}
        return {"action": "run", "task": loaded.task.value, "results": results}

    def report(self, cfg: RunConfig, loaded: EncoderModel, result: dict, backends: list[EncoderBackend]) -> None:
        p = cfg.timing.percentiles[0]
        for b in backends:
            r = result["results"][b.name]
            acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.2f}"
            print(f"[{label(b)}] {loaded.task.value}: accuracy {acc} over {len(r['examples'])} examples; "
                  f"p{p} {r['latency_s'] * 1e3:.2f} ms, {r['samples_per_second']:.1f} samples/s")
            for name, ex in r["examples"].items():
                print(f"  {name}: {_said(ex['match']):<8} {ex['latency_s'] * 1e3:.2f} ms  {_short(ex['output'], 70)!r}")


class EncoderCompare(EncoderRun):
    """`compare` for encoders: every backend's answers beside the first's; under --quantize, each
    quantized backend's against frameworks (fp32)."""

    def run(self, cfg: RunConfig, family, loaded: EncoderModel, backends: list[EncoderBackend]) -> dict:
        results = {b.name: run_backend(cfg, family, loaded, b) for b in backends}
        first = backends[0].name
        for name in _example_names(results):
            reference = results[first]["examples"].get(name)
            for b in backends:
                ex = results[b.name]["examples"].get(name)
                if ex is not None:
                    ex["same_as_" + first] = all(_same(loaded, a, r) for a, r in zip(_listed(ex["answers"]),
                                                                                      _listed(reference["answers"])))
        if cfg.quantize is not None and first == "frameworks":
            for name, r in list(results.items())[1:]:
                same = sum(ex.get("same_as_" + first, False) for ex in r["examples"].values())
                delta = None if r["accuracy"] is None or results[first]["accuracy"] is None \
                    else r["accuracy"] - results[first]["accuracy"]
                r["delta_to_fp32"] = {"same_outputs": same, "accuracy_delta": delta}
        return {"action": "compare", "task": loaded.task.value, "results": results}

    def report(self, cfg: RunConfig, loaded: EncoderModel, result: dict, backends: list[EncoderBackend]) -> None:
        results, first = result["results"], backends[0].name
        p = cfg.timing.percentiles[0]
        rows = []
        for name in _example_names(results):
            for b in backends:
                ex = results[b.name]["examples"].get(name)
                if ex is None:
                    continue
                rows.append([name, b.name, _said(ex["match"]), f"{ex['latency_s'] * 1e3:.2f}", _short(ex["output"]),
                             "-" if b.name == first else ("yes" if ex["same_as_" + first] else "DIFFERS")])
        print(table(["example", "backend", "match", f"p{p} (ms)", "output", f"same as {first}"], rows))
        print()
        summary = [[n, r["device"], r["precision"], "-" if r["accuracy"] is None else f"{r['accuracy']:.2f}",
                    f"{r['latency_s'] * 1e3:.2f}", f"{r['samples_per_second']:.1f}"] for n, r in results.items()]
        print(table(["backend", "device", "precision", "accuracy", "latency (ms)", "samples/s"], summary))
        for name, r in list(results.items())[1:]:
            print(f"{name} is {results[first]['latency_s'] / r['latency_s']:.2f}x {first}")
        for name, r in list(results.items())[1:]:
            delta = r.get("delta_to_fp32")
            if delta is not None:
                acc = delta["accuracy_delta"]
                print(f"{name} {cfg.quantize.scheme} against frameworks: {delta['same_outputs']}/{len(r['examples'])} "
                      "outputs identical" + ("" if acc is None else f", accuracy {acc:+.2f}"))


def _example_names(results: dict) -> list[str]:
    return list(dict.fromkeys(n for r in results.values() for n in r["examples"]))


def _listed(answers) -> list:
    return answers if isinstance(answers, list) else [answers]


def _said(match: bool | None) -> str:
    return "no label" if match is None else ("match" if match else "MISS")


# --------------------------------------------------------------------------- accuracy
def samples(cfg: RunConfig, family, loaded: EncoderModel) -> list[dict]:
    path = cfg.dataset_path if cfg.dataset_path is not None else sample_path(family, loaded)
    rows = dataset(loaded, path)[: cfg.num_samples]
    if loaded.is_image:   # every image readable before any export
        for row in rows:
            encode(loaded, [row])
    return rows


def answers_for(backend: EncoderBackend, loaded: EncoderModel, rows: list[dict], batch_size: int) -> list[dict]:
    """Answers for every row, batch_size at a time; a short last batch is filled with copies of its
    last row (answers dropped), so every batch has the rows a TensorRT profile was built for."""
    out = []
    for start in progress(range(0, len(rows), batch_size), f"accuracy [{backend.name}]"):
        part = rows[start:start + batch_size]
        batch = encode(loaded, part + [part[-1]] * (batch_size - len(part)))
        out += predict(loaded, batch, backend.forward(batch.feed))[: len(part)]
    return out


class EncoderAccuracy(EncoderAction):
    """`accuracy` for encoders: the task's metric on --dataset-path or the family's shipped sample."""

    def check_inputs(self, cfg: RunConfig, family) -> None:
        super().check_inputs(cfg, family)
        if cfg.dataset_path is not None:
            read_jsonl(cfg.dataset_path)

    def check_loaded(self, cfg: RunConfig, family, loaded: EncoderModel) -> None:
        super().check_loaded(cfg, family, loaded)
        samples(cfg, family, loaded)

    def keeps_torch_model(self, cfg: RunConfig, loaded: EncoderModel) -> bool:
        return super().keeps_torch_model(cfg, loaded) or loaded.task is Task.EMBEDDINGS   # the cosine reference

    def run(self, cfg: RunConfig, family, loaded: EncoderModel, backends: list[EncoderBackend]) -> dict:
        rows = samples(cfg, family, loaded)
        answers = {b.name: answers_for(b, loaded, rows, cfg.batch_size) for b in backends}
        reference = answers.get("frameworks")
        if loaded.task is Task.EMBEDDINGS and reference is None:   # cosine agreement needs PyTorch's embeddings
            reference = answers_for(TorchEncoder(loaded, framework_placement(True, False)), loaded, rows, cfg.batch_size)
        results = {b.name: {**identity(b), **score(loaded, rows, answers[b.name], reference),
                            "num_samples": len(rows)} for b in backends}
        if cfg.quantize is not None and "frameworks" in results:
            ref = results["frameworks"]
            for b in backends:
                if b.name == "frameworks":
                    continue
                r = results[b.name]
                r["delta_to_fp32"] = {k: r[k] - ref[k] for k in r if isinstance(r[k], float) and k in ref}
                r["delta_to_fp32"]["same_answers"] = sum(_same(loaded, a, f) for a, f in zip(answers[b.name],
                                                                                             answers["frameworks"]))
        source = cfg.dataset_path or sample_path(family, loaded)
        return {"action": "accuracy", "task": loaded.task.value, "metric": PRIMARY_METRIC[loaded.task],
                "num_samples": len(rows), "batch_size": cfg.batch_size, "dataset": str(source), "results": results}

    def report(self, cfg: RunConfig, loaded: EncoderModel, result: dict, backends: list[EncoderBackend]) -> None:
        results, n = result["results"], result["num_samples"]
        print(f"{loaded.task.value} accuracy of {loaded.variant}, {n} samples from {result['dataset']}")
        for b in backends:
            shown = "  ".join(f"{k}={v:.4f}" for k, v in results[b.name].items() if isinstance(v, float))
            print(f"  {label(b):<30} {shown}")
        if cfg.quantize is not None and "frameworks" in results:
            ref = results["frameworks"]
            print(f"{cfg.quantize.scheme} against frameworks ({ref['precision']} on {ref['device']}):")
            for b in backends:
                if b.name == "frameworks":
                    continue
                delta = results[b.name]["delta_to_fp32"]
                print(f"  {label(b):<30} " + "  ".join(f"{k} {v:+.4f}" for k, v in delta.items() if isinstance(v, float))
                      + f"  ({delta['same_answers']}/{n} answers identical)")


# --------------------------------------------------------------------------- benchmark
class EncoderBenchmark(EncoderAction):
    """`benchmark` for encoders: seeded random inputs at --batch-size or each size of --batch-sweep:
    latency, samples/s, and each backend's largest output difference from the first backend's."""

    def sequence_length(self, cfg: RunConfig, loaded: EncoderModel) -> int:
        return cfg.input_seq_len

    def check_loaded(self, cfg: RunConfig, family, loaded: EncoderModel) -> None:
        super().check_loaded(cfg, family, loaded)
        random_batch(loaded, 1, cfg.input_seq_len, cfg.seed)

    def run(self, cfg: RunConfig, family, loaded: EncoderModel, backends: list[EncoderBackend]) -> dict:
        sizes = cfg.batch_sweep or (cfg.batch_size,)
        pct = cfg.timing.percentiles
        results, firsts = {}, {}
        for backend in backends:
            per_size = {}
            for b in sizes:
                feed = random_batch(loaded, b, cfg.input_seq_len, cfg.seed)
                with status(f"benchmarking {backend.name} at batch {b}"), PeakMemory() as peak:
                    latencies, outputs = _timed(backend, feed, cfg)
                first = firsts.setdefault(b, outputs)
                diff = max(float(np.max(np.abs(outputs[k] - first[k]), initial=0.0)) for k in outputs)
                per_size[str(b)] = {"latency_s": percentile(latencies, pct[0]),
                                    "samples_per_second": b / percentile(latencies, pct[0]),
                                    "percentiles": {str(q): percentile(latencies, q) for q in pct},
                                    "max_abs_diff_to_" + backends[0].name: diff, "iterations": len(latencies),
                                    **peak.result(backend.device)}
            main = per_size[str(cfg.batch_size)] if str(cfg.batch_size) in per_size else per_size[str(sizes[0])]
            results[backend.name] = {**identity(backend), **main, "percentile": pct[0], "batch_sizes": per_size}
        return {"action": "benchmark", "task": loaded.task.value,
                "settings": {**{k: v for k, v in settings_dict(cfg).items() if k in ("family", "variant", "backends", "batch_size", "fp16")},
                             "input_seq_len": None if loaded.is_image else cfg.input_seq_len,
                             "image_size": list(loaded.image_size) if loaded.is_image else None,
                             "batch_sweep": list(sizes), "quantize": cfg.quantize.scheme if cfg.quantize else None,
                             "timing": asdict(cfg.timing)},
                "results": results}

    def report(self, cfg: RunConfig, loaded: EncoderModel, result: dict, backends: list[EncoderBackend]) -> None:
        results, pct = result["results"], cfg.timing.percentiles
        shape = (f"{loaded.image_size[0]}x{loaded.image_size[1]} images" if loaded.is_image
                 else f"{cfg.input_seq_len} tokens per row")
        print(f"benchmark {loaded.variant} ({loaded.task.value}): {shape}, p{pct[0]} over {cfg.timing.iterations}+ iterations")
        base = backends[0].name
        rows = []
        for name, r in results.items():
            for b, s in r["batch_sizes"].items():
                ref = results[base]["batch_sizes"][b]["latency_s"]
                rows.append([name, r["device"], r["precision"], b, f"{s['latency_s'] * 1e3:.2f}",
                             f"{s['samples_per_second']:.1f}", f"{ref / s['latency_s']:.2f}x",
                             f"{s['max_abs_diff_to_' + base]:.2g}", megabytes(s["peak_host_memory_mb"]),
                             megabytes(s["peak_gpu_memory_mb"])])
        print(table(["backend", "device", "precision", "batch", "latency (ms)", "samples/s", f"vs {base}",
                     f"max |diff| to {base}", "peak host (MB)", "peak GPU (MB)"], rows))


# --------------------------------------------------------------------------- chat
def converse(cfg: RunConfig, loaded: EncoderModel, backends: list[EncoderBackend], stdin=None, out=None) -> dict:
    """One answer per line of `stdin` (sys.stdin) until EOF, 'exit' or Ctrl-C, printed to `out` (sys.stdout)."""
    stdin, out = stdin or sys.stdin, out or sys.stdout
    qa = loaded.task is Task.QUESTION_ANSWERING
    what = {Task.QUESTION_ANSWERING: "type a context, then questions about it ('context: ...' starts a new one)",
            Task.IMAGE_CLASSIFICATION: "type an image path per line"}.get(loaded.task, "type a line of text")
    print(f"{loaded.task.value} with {loaded.variant} on {', '.join(b.name for b in backends)}: {what}; "
          "'exit' or Ctrl-D to stop", file=out, flush=True)
    turns, context = [], None
    lines = [str(cfg.image)] if cfg.image is not None else []
    try:
        while True:
            if lines:
                line = lines.pop(0)
            else:
                print("> ", end="", file=out, flush=True)
                line = read_line(stdin)
            if not line or (isinstance(line, str) and line.strip().lower() in EXIT_WORDS):
                break
            try:
                text = as_text(line).rstrip("\n")
                if not text.strip():
                    continue
                if qa and (context is None or text.lower().startswith("context:")) and QA_SEPARATOR not in text:
                    context = text.split(":", 1)[1].strip() if text.lower().startswith("context:") else text
                    print("(context set; ask questions about it)", file=out, flush=True)
                    continue
                example = parse_line(loaded, text, context)
                batch = encode(loaded, [example])
            except UsageError as e:
                print(f"error: {e}", file=out, flush=True)
                continue
            turn = {"input": text, "outputs": {}}
            for backend in backends:
                start = time.perf_counter()
                answer = predict(loaded, batch, backend.forward(batch.feed))[0]
                seconds = time.perf_counter() - start
                shown = answer["label"] if loaded.task is not Task.TOKEN_CLASSIFICATION or answer["entities"] else NO_ENTITIES
                score_text = f" ({answer['score']:.2f})" if "score" in answer else ""
                prefix = f"[{label(backend)}] " if len(backends) > 1 else ""
                print(f"{prefix}{shown}{score_text}  ({seconds * 1e3:.1f} ms)", file=out, flush=True)
                turn["outputs"][backend.name] = {"output": answer["label"], "seconds": seconds, **identity(backend)}
            turns.append(turn)
    except KeyboardInterrupt:
        print("", file=out, flush=True)
    print("bye", file=out, flush=True)
    return {"action": "chat", "task": loaded.task.value, "turns": turns}


class EncoderChat(EncoderAction):
    """`chat` for encoders: each line classified (text or an image path); question answering takes a
    context first, then questions."""

    def run(self, cfg: RunConfig, family, loaded: EncoderModel, backends: list[EncoderBackend]) -> dict:
        return converse(cfg, loaded, backends)
