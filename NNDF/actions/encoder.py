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

from NNDF.actions.common import identity, label, settings_dict, table
from NNDF.config import RunConfig
from NNDF.encoder_only import EncoderBackend, EncoderModel, Task
from NNDF.encoder_tasks import (NO_ENTITIES, PRIMARY_METRIC, QA_SEPARATOR, cosine, dataset, encode, parse_line, predict,
                                random_batch, read_jsonl, score)
from NNDF.errors import UsageError
from NNDF.progress import progress, status
from NNDF.timing import measure, percentile

SAME_EMBEDDING = 0.999     # cosine above which two backends' embeddings count as the same answer


def perform(cfg: RunConfig, family, loaded: EncoderModel, backends: list[EncoderBackend]) -> dict:
    if cfg.action == "accuracy":
        return accuracy(cfg, family, loaded, backends)
    if cfg.action == "benchmark":
        return benchmark(cfg, loaded, backends)
    if cfg.action == "chat":
        return chat(cfg, loaded, backends)
    return run_examples(cfg, family, loaded, backends, compare=cfg.action == "compare")


# --------------------------------------------------------------------------- checks before work
def sample_path(family, loaded_or_task) -> Path:
    task = loaded_or_task.task if isinstance(loaded_or_task, EncoderModel) else loaded_or_task
    return family.folder / family.samples[task]


def check_inputs(cfg: RunConfig, family) -> None:
    """Before loading: the files the action reads parse, and an image goes to an image model."""
    image_family = any(layout.image_input for layout in family.layouts.values())
    if cfg.image is not None and not image_family:
        raise UsageError(f"--image {cfg.image} was given, but {family.name} is a text family",
                         "drop --image, or use an image family such as VIT")
    if cfg.action == "accuracy" and cfg.dataset_path is not None:
        read_jsonl(cfg.dataset_path)
    elif cfg.action in ("run", "compare") and cfg.image is None:
        from NNDF.actions.run_examples import all_prompts

        all_prompts(cfg, family, _variant_name(cfg, family))


def _variant_name(cfg: RunConfig, family) -> str:
    listed = None if cfg.torch_dir is not None else family.find_variant(cfg.variant)
    return cfg.variant if listed is None else listed.name


def check_loaded(cfg: RunConfig, family, loaded: EncoderModel):
    """After loading, before any export: every example and sample fits the task, the run fits memory."""
    from NNDF import memory

    est = estimate(cfg, loaded)
    memory.check(est, cfg)
    if cfg.action == "accuracy":
        samples(cfg, family, loaded)
    elif cfg.action in ("run", "compare"):
        for backend in cfg.backends:
            for _, rows, _, _ in examples(cfg, family, loaded, backend, cfg.graph_precision):
                encode(loaded, rows)     # a QA input without context, an unreadable image: one line now
    elif cfg.action == "benchmark":
        random_batch(loaded, 1, cfg.input_seq_len, cfg.seed)
    return est


def estimate(cfg: RunConfig, loaded: EncoderModel):
    """Peak host memory: weights, a copy per compiled session, one layer's attention scores and
    the hidden states of the largest batch (no cache, no vocabulary logits in an encoder)."""
    from NNDF import memory
    from NNDF.encoder_only import image_positions

    config = loaded.config
    weights = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    on_gpu = tuple(b for b in cfg.backends if not memory.runs_on_host(b, cfg))
    compiled = [b for b in cfg.backends if b not in on_gpu and b != "frameworks"]
    sessions = int(len(compiled) * weights * (0.5 if cfg.fp16 else 1.0))
    rows = max((cfg.batch_size, *cfg.batch_sweep))
    seq = image_positions(config) if loaded.is_image else min(cfg.input_seq_len if cfg.action == "benchmark"
                                                              else loaded.max_positions, loaded.max_positions)
    heads, hidden = config.num_attention_heads, config.hidden_size
    wide = max(hidden, getattr(config, "intermediate_size", 0) or getattr(config, "hidden_dim", 0))
    # one layer's scores, and a few (rows, seq, feed-forward width) activations, counted as attention
    activations = rows * heads * seq * seq * 4 + rows * seq * wide * 4 * 3
    if len(on_gpu) == len(cfg.backends):
        activations = 0
    return memory.MemoryEstimate(weights, sessions, 0, activations, 0, rows, seq, on_gpu)


# --------------------------------------------------------------------------- run / compare
def examples(cfg: RunConfig, family, loaded: EncoderModel, backend: str, precision: str) -> list[tuple]:
    """(name, the example dicts of one batch, their labels or None, whether the file gave a list)
    for one backend; --image replaces the checkpoint's examples with that image, unscored."""
    if cfg.image is not None:
        return [("image", [{"image": str(cfg.image)}] * cfg.batch_size, None, False)]
    from NNDF.actions.run_examples import examples_for

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


def run_examples(cfg: RunConfig, family, loaded: EncoderModel, backends: list[EncoderBackend], compare: bool) -> dict:
    results = {b.name: run_backend(cfg, family, loaded, b) for b in backends}
    p = cfg.timing.percentiles[0]
    first = backends[0].name
    if not compare:
        for b in backends:
            r = results[b.name]
            acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.2f}"
            print(f"[{label(b)}] {loaded.task.value}: accuracy {acc} over {len(r['examples'])} examples; "
                  f"p{p} {r['latency_s'] * 1e3:.2f} ms, {r['samples_per_second']:.1f} samples/s")
            for name, ex in r["examples"].items():
                said = "no label" if ex["match"] is None else ("match" if ex["match"] else "MISS")
                print(f"  {name}: {said:<8} {ex['latency_s'] * 1e3:.2f} ms  {_short(ex['output'], 70)!r}")
        return {"action": "run", "task": loaded.task.value, "results": results}

    rows = []
    names = list(dict.fromkeys(n for r in results.values() for n in r["examples"]))
    for name in names:
        reference = results[first]["examples"].get(name)
        for b in backends:
            ex = results[b.name]["examples"].get(name)
            if ex is None:
                continue
            said = "no label" if ex["match"] is None else ("match" if ex["match"] else "MISS")
            answers = ex["answers"] if isinstance(ex["answers"], list) else [ex["answers"]]
            ref = reference["answers"] if isinstance(reference["answers"], list) else [reference["answers"]]
            same = all(_same(loaded, a, r) for a, r in zip(answers, ref))
            ex["same_as_" + first] = same
            rows.append([name, b.name, said, f"{ex['latency_s'] * 1e3:.2f}", _short(ex["output"]),
                         "-" if b.name == first else ("yes" if same else "DIFFERS")])
    print(table(["example", "backend", "match", f"p{p} (ms)", "output", f"same as {first}"], rows))
    print()
    summary = [[n, r["device"], r["precision"], "-" if r["accuracy"] is None else f"{r['accuracy']:.2f}",
                f"{r['latency_s'] * 1e3:.2f}", f"{r['samples_per_second']:.1f}"] for n, r in results.items()]
    print(table(["backend", "device", "precision", "accuracy", "latency (ms)", "samples/s"], summary))
    for name, r in list(results.items())[1:]:
        print(f"{name} is {results[first]['latency_s'] / r['latency_s']:.2f}x {first}")
    if cfg.quantize is not None and first == "frameworks":
        for name, r in list(results.items())[1:]:
            same = sum(ex.get("same_as_" + first, False) for ex in r["examples"].values())
            delta = None if r["accuracy"] is None or results[first]["accuracy"] is None \
                else r["accuracy"] - results[first]["accuracy"]
            r["delta_to_fp32"] = {"same_outputs": same, "accuracy_delta": delta}
            print(f"{name} {cfg.quantize.scheme} against frameworks: {same}/{len(r['examples'])} outputs identical"
                  + ("" if delta is None else f", accuracy {delta:+.2f}"))
    return {"action": "compare", "task": loaded.task.value, "results": results}


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


def accuracy(cfg: RunConfig, family, loaded: EncoderModel, backends: list[EncoderBackend]) -> dict:
    rows = samples(cfg, family, loaded)
    answers = {b.name: answers_for(b, loaded, rows, cfg.batch_size) for b in backends}
    reference = answers.get("frameworks")
    if loaded.task is Task.EMBEDDINGS and reference is None:   # cosine agreement needs PyTorch's embeddings
        from NNDF.torch_placement import framework_placement
        from NNDF.encoder_only import TorchEncoder

        reference = answers_for(TorchEncoder(loaded, framework_placement(True, False)), loaded, rows, cfg.batch_size)
    results = {b.name: {**identity(b), **score(loaded, rows, answers[b.name], reference),
                        "num_samples": len(rows)} for b in backends}
    source = cfg.dataset_path or sample_path(family, loaded)
    print(f"{loaded.task.value} accuracy of {loaded.variant}, {len(rows)} samples from {source}")
    for b in backends:
        shown = "  ".join(f"{k}={v:.4f}" for k, v in results[b.name].items() if isinstance(v, float))
        print(f"  {label(b):<30} {shown}")
    if cfg.quantize is not None and "frameworks" in results:
        ref = results["frameworks"]
        print(f"{cfg.quantize.scheme} against frameworks ({ref['precision']} on {ref['device']}):")
        for b in backends:
            if b.name == "frameworks":
                continue
            r = results[b.name]
            r["delta_to_fp32"] = {k: r[k] - ref[k] for k in r if isinstance(r[k], float) and k in ref}
            same = sum(_same(loaded, a, f) for a, f in zip(answers[b.name], answers["frameworks"]))
            r["delta_to_fp32"]["same_answers"] = same
            print(f"  {label(b):<30} " + "  ".join(f"{k} {v:+.4f}" for k, v in r["delta_to_fp32"].items()
                                                    if isinstance(v, float)) + f"  ({same}/{len(rows)} answers identical)")
    return {"action": "accuracy", "task": loaded.task.value, "metric": PRIMARY_METRIC[loaded.task],
            "num_samples": len(rows), "batch_size": cfg.batch_size, "dataset": str(source), "results": results}


# --------------------------------------------------------------------------- benchmark
def benchmark(cfg: RunConfig, loaded: EncoderModel, backends: list[EncoderBackend]) -> dict:
    sizes = cfg.batch_sweep or (cfg.batch_size,)
    pct = cfg.timing.percentiles
    results, firsts = {}, {}
    for backend in backends:
        per_size = {}
        for b in sizes:
            feed = random_batch(loaded, b, cfg.input_seq_len, cfg.seed)
            with status(f"benchmarking {backend.name} at batch {b}"):
                latencies, outputs = _timed(backend, feed, cfg)
            first = firsts.setdefault(b, outputs)
            diff = max(float(np.max(np.abs(outputs[k] - first[k]), initial=0.0)) for k in outputs)
            per_size[str(b)] = {"latency_s": percentile(latencies, pct[0]),
                                "samples_per_second": b / percentile(latencies, pct[0]),
                                "percentiles": {str(q): percentile(latencies, q) for q in pct},
                                "max_abs_diff_to_" + backends[0].name: diff, "iterations": len(latencies)}
        main = per_size[str(cfg.batch_size)] if str(cfg.batch_size) in per_size else per_size[str(sizes[0])]
        results[backend.name] = {**identity(backend), **main, "percentile": pct[0], "batch_sizes": per_size}
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
                         f"{s['max_abs_diff_to_' + base]:.2g}"])
    print(table(["backend", "device", "precision", "batch", "latency (ms)", "samples/s", f"vs {base}",
                 f"max |diff| to {base}"], rows))
    return {"action": "benchmark", "task": loaded.task.value,
            "settings": {**{k: v for k, v in settings_dict(cfg).items() if k in ("family", "variant", "backends", "batch_size", "fp16")},
                         "input_seq_len": None if loaded.is_image else cfg.input_seq_len,
                         "image_size": list(loaded.image_size) if loaded.is_image else None,
                         "batch_sweep": list(sizes), "quantize": cfg.quantize.scheme if cfg.quantize else None,
                         "timing": asdict(cfg.timing)},
            "results": results}


# --------------------------------------------------------------------------- chat
def chat(cfg: RunConfig, loaded: EncoderModel, backends: list[EncoderBackend], stdin=None, out=None) -> dict:
    from NNDF.actions.chat import EXIT_WORDS, as_text, read_line

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
