"""LAMBADA top-N accuracy and perplexity, with the original demo's definitions.

Samples: rows drawn as the demo drew them (seed 42, with replacement, curly quotes
straightened) from LAMBADA's validation split or a --dataset-path file. Per sample the
last N tokens are targets and the rest is context; logits are teacher-forced. Top-n
accuracy averages over samples and tokens; token and sequence perplexity are exp of the
mean over samples of the mean cross-entropy over targets / over every position after the
first, each sample's capped at 12 as the demo capped it.

One departure from the demo, on purpose: a text longer than the model's
positions loses its beginning, not its end (the demo's `truncation=True` kept
the first positions, so the "last N tokens" came from the middle of the text).
How many samples were cut is printed and saved as `truncated_samples`.

Samples are scored --batch-size at a time (right-padded; each row repeated --num-beams
times, as the demo fed its beams, so a TensorRT profile built for batch x beams rows fits),
and with --use-cache through the decoder generation uses: the context in one prefill, then
each target as a one-token step on the KV cache.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from NNDF.actions.action import Action
from NNDF.actions.quant_gate import delta_to_fp32, describe, passes
from NNDF.actions.reporting import identity, label
from NNDF.actions.scoring import MAX_PPL, batch_logits, score_sample
from NNDF.base.config import RunConfig
from NNDF.base.errors import UsageError
from NNDF.base.progress import progress
from NNDF.base.text import normalize_text
from NNDF.models.data_checks import jsonl_texts, read_jsonl, type_name
from NNDF.models.family import LoadedModel
from NNDF.models.hub import hub_reachable
from NNDF.models.tokenizers import DATA_DIR
from NNDF.runtime.backends import Backend
from NNDF.runtime.memory import Workload

SHIPPED_SAMPLE = DATA_DIR / "lambada_sample.jsonl"
SAMPLE_SEED = 42       # the demo's RANDOM_SEED


def load_texts(path: Path | None, num_samples: int, cache_dir: Path | None = None) -> list[str]:
    """num_samples texts drawn as the demo drew them, from --dataset-path or the hub's
    LAMBADA validation split (kept in cache_dir after the first download)."""
    rows = jsonl_texts(path) if path is not None else _hub_lambada(cache_dir)
    return demo_sample(rows, num_samples)


def lambada_cache(cfg: RunConfig) -> Path:
    """Where the hub's LAMBADA is kept after its first download (the demo's place)."""
    return Path(cfg.working_dir) / "lambada"


def lambada_reachable(cfg: RunConfig) -> bool:
    """Whether the hub's LAMBADA can be had: the datasets package, and a kept copy or the hub."""
    try:
        import datasets  # noqa: F401 -- only whether it imports
    except ImportError:
        return False
    return lambada_cache(cfg).is_dir() or hub_reachable()


def dataset_path(cfg: RunConfig) -> Path | None:
    """The texts a run scores: --dataset-path, else None (the hub's LAMBADA) where that can be had,
    else the shipped sample of LAMBADA, so the bare `accuracy FAMILY BACKEND` works offline too."""
    if cfg.dataset_path is not None or lambada_reachable(cfg):
        return cfg.dataset_path
    return SHIPPED_SAMPLE


def demo_sample(rows: list[str], num_samples: int) -> list[str]:
    """The demo's selection: torch.randint(0, rows, (num_samples,), generator=torch.manual_seed(42)),
    with replacement (a fresh generator with that seed gives the same indices without
    reseeding the caller's global RNG), each text normalised."""
    index = torch.randint(0, len(rows), (num_samples,), generator=torch.Generator().manual_seed(SAMPLE_SEED))
    return [normalize_text(rows[i]) for i in index.tolist()]


def _hub_lambada(cache_dir: Path | None) -> list[str]:
    """LAMBADA's validation split (the demo's), saved with save_to_disk after the first download."""
    offline_fix = f"pass --dataset-path (a sample ships at {SHIPPED_SAMPLE})"
    try:
        import datasets
    except ImportError:
        raise UsageError("LAMBADA from the hub needs the datasets package",
                         f"pip install -e \".[data]\", or {offline_fix}") from None
    if cache_dir is not None and cache_dir.is_dir():
        try:
            return list(datasets.load_from_disk(str(cache_dir))["text"])
        except Exception:  # a damaged copy in any of several ways: fetch it again
            shutil.rmtree(cache_dir, ignore_errors=True)
    if not hub_reachable():
        raise UsageError("could not load LAMBADA: the HuggingFace hub is unreachable and no copy is cached",
                         offline_fix)
    try:
        data = datasets.load_dataset("lambada", split="validation")
    except Exception:  # no hub, no such dataset: all mean the same to the user
        raise UsageError("could not load LAMBADA from the HuggingFace hub", offline_fix) from None
    if cache_dir is not None:   # written aside and renamed, so a half-written copy is never read
        partial = cache_dir.with_name(f"{cache_dir.name}.partial-{os.getpid()}")
        data.save_to_disk(str(partial))
        os.replace(partial, cache_dir)
    return list(data["text"])


def kept_tokens(loaded: LoadedModel, text: str) -> tuple[list[int], bool]:
    """The text's token ids, fitted to the model's positions by cutting the *front* of the text
    (special tokens the tokenizer adds at either end stay), so the scored last tokens are the
    text's real last tokens with as much context as fits; and whether anything was cut."""
    ids = loaded.tokenizer(text)["input_ids"]
    if len(ids) <= loaded.max_positions:
        return ids, False
    special = set(loaded.tokenizer.all_special_ids)
    head = next((i for i, t in enumerate(ids) if t not in special), len(ids))
    tail = next((i for i, t in enumerate(reversed(ids)) if t not in special), 0)
    room = loaded.max_positions - head - tail
    return ids[:head] + ids[len(ids) - tail - room: len(ids) - tail] + ids[len(ids) - tail:], True


def teacher_forced_sequence(loaded: LoadedModel, text: str, n_targets: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(sequence whose tokens are scored, encoder input or None).

    Encoder-decoder models read the context and are scored on the whole text
    behind the decoder start token, with the final EOS left out, as the original demo did.
    """
    ids, _ = kept_tokens(loaded, text)
    if len(ids) <= n_targets + 1:
        raise UsageError(f"a sample has only {len(ids)} tokens, too few for {n_targets} targets",
                         "lower --tokens-to-generate or use longer texts")
    if not loaded.model.config.is_encoder_decoder:
        return np.asarray(ids, np.int64), None
    eos = loaded.generation_defaults["eos_token_id"]
    if ids and ids[-1] == eos:
        ids = ids[:-1]
    start = loaded.generation_defaults["decoder_start_token_id"]
    encoder = ids[:-n_targets] + ([eos] if eos is not None else [])
    return np.asarray([start] + ids, np.int64), np.asarray(encoder, np.int64)


def caption_rows(path: Path, num_samples: int) -> list[dict]:
    """The first num_samples {"image", "text"} rows of an image-to-text accuracy file (an image path
    relative to the file's folder), every field checked."""
    rows = []
    for number, row in read_jsonl(path, 'one {"image": PATH, "text": CAPTION} object per line'):
        for field in ("image", "text"):
            if not isinstance(row.get(field), str):
                got = "missing" if field not in row else type_name(row[field])
                raise UsageError(f"{path} line {number}: \"{field}\" is {got}, not a string",
                                 'write one {"image": PATH, "text": CAPTION} object per line')
        image = row["image"] if "://" in row["image"] or Path(row["image"]).is_absolute() else str(path.parent / row["image"])
        rows.append({"image": image, "text": normalize_text(row["text"])})
    if not rows:
        raise UsageError(f"{path} holds no samples")
    return rows[:num_samples]


def samples_for(cfg: RunConfig, loaded: LoadedModel) -> list:
    """What a run scores: texts drawn as the demo drew them, or for an image-to-text model the
    first --num-samples captioned images (--dataset-path, else the family's shipped captions)."""
    if loaded.reads_images:
        return caption_rows(cfg.dataset_path or loaded.caption_samples, cfg.num_samples)
    return load_texts(cfg.dataset_path, cfg.num_samples, lambada_cache(cfg))


def scored_sequence(loaded: LoadedModel, sample, n_targets: int) -> tuple[np.ndarray, np.ndarray | None]:
    if loaded.reads_images:
        return loaded.caption_sequence(sample, n_targets)
    return teacher_forced_sequence(loaded, sample, n_targets)


def score_all(backend: Backend, loaded: LoadedModel, texts: list, n_targets: int, top_ns: list[int],
              batch_size: int = 1, num_beams: int = 1, use_cache: bool = False) -> list[dict]:
    """score_sample for every text (or captioned image), fed batch_size at a time. A short last batch
    is filled up with copies of its last sample (and their scores dropped), so every batch has the
    same rows."""
    samples = [scored_sequence(loaded, text, n_targets) for text in texts]
    scores = []
    for start in progress(range(0, len(samples), batch_size), f"accuracy [{backend.name}]"):
        batch = samples[start:start + batch_size]
        filled = batch + [batch[-1]] * (batch_size - len(batch))
        logits = batch_logits(backend, loaded, filled, n_targets, num_beams, use_cache)
        scores += [score_sample(lg, seq, n_targets, top_ns) for lg, (seq, _) in zip(logits, batch)]
    return scores


def evaluate(backend: Backend, loaded: LoadedModel, texts: list[str], n_targets: int, top_ns: list[int],
             batch_size: int = 1, num_beams: int = 1, use_cache: bool = False) -> dict:
    per_sample = score_all(backend, loaded, texts, n_targets, top_ns, batch_size, num_beams, use_cache)
    return {
        "top_n": {str(n): float(np.mean([s["hits"][n] for s in per_sample])) for n in top_ns},
        "token_perplexity": min(float(np.exp(np.mean([s["target_nll"] for s in per_sample]))), MAX_PPL),
        "seq_perplexity": min(float(np.exp(np.mean([s["seq_nll"] for s in per_sample]))), MAX_PPL),
        "num_samples": len(per_sample),
        "truncated_samples": 0 if loaded.reads_images else sum(kept_tokens(loaded, text)[1] for text in texts),
    }


class Accuracy(Action):
    """`accuracy` for generating models: LAMBADA top-N and perplexity, per backend."""

    def check_inputs(self, cfg: RunConfig, family) -> None:
        for flag, used in (("--num-beams", cfg.generation.num_beams > 1), ("--do-sample", cfg.generation.do_sample)):
            if used:
                print(f"note: accuracy is teacher-forced, so {flag} does not change it", file=sys.stderr)
        if family.reads_images:
            if cfg.dataset_path is not None:
                caption_rows(cfg.dataset_path, cfg.num_samples)
            return
        load_texts(dataset_path(cfg), cfg.num_samples, lambada_cache(cfg))

    def fit(self, cfg: RunConfig, family, loaded) -> RunConfig:
        if loaded.reads_images:
            return cfg
        path = dataset_path(cfg)
        if path != cfg.dataset_path:
            print(f"note: LAMBADA cannot be loaded here (no datasets package, or no hub and no copy in "
                  f"{lambada_cache(cfg)}), so this scores the shipped sample {path.name} (--dataset-path "
                  "FILE.jsonl to choose)", file=sys.stderr)
        return replace(cfg, dataset_path=path)

    def workload(self, cfg: RunConfig, family, loaded) -> Workload:
        # teacher-forced: a batch of samples of up to every position at a time, one token "generated"
        return Workload(cfg.batch_size, loaded.max_positions, 1, teacher_forced=True)

    def check_loaded(self, cfg: RunConfig, family, loaded) -> None:
        super().check_loaded(cfg, family, loaded)
        for sample in samples_for(cfg, loaded):     # every image readable, every caption long enough
            scored_sequence(loaded, sample, cfg.tokens_to_generate)

    def run(self, cfg: RunConfig, family, loaded, backends: list[Backend]) -> dict:
        texts = samples_for(cfg, loaded)
        top_ns = sorted({1, 10, cfg.top_n})
        gen = cfg.generation
        results = {b.name: {**identity(b), **evaluate(b, loaded, texts, cfg.tokens_to_generate, top_ns, cfg.batch_size,
                                                      gen.num_beams, gen.use_cache)} for b in backends}
        if cfg.quantize is not None and "frameworks" in results:
            reference = results["frameworks"]
            for b in backends:
                if b.name != "frameworks":
                    r = results[b.name]
                    r["delta_to_fp32"] = delta_to_fp32(reference, r)
                    r["within_gate"] = passes(cfg.quantize.scheme, r["delta_to_fp32"])
        cut = next(iter(results.values()))["truncated_samples"]
        source = cfg.dataset_path or (loaded.caption_samples if loaded.reads_images else None)
        return {"action": "accuracy", "dataset": str(source) if source else "lambada (validation)",
                "num_samples": len(texts), "tokens_to_generate": cfg.tokens_to_generate,
                "batch_size": cfg.batch_size, "num_beams": gen.num_beams, "use_cache": gen.use_cache,
                "truncated_samples": cut, "results": results}

    def report(self, cfg: RunConfig, loaded, result: dict, backends: list[Backend]) -> None:
        results, n = result["results"], result["num_samples"]
        top_ns = sorted({1, 10, cfg.top_n})
        what = "caption" if loaded.reads_images else "LAMBADA"
        print(f"{what} accuracy, {n} samples, last {cfg.tokens_to_generate} tokens as targets"
              + (", scored through the KV cache" if result["use_cache"] else ""))
        if result["truncated_samples"]:
            print(f"  {result['truncated_samples']} of {n} samples are longer than the model's "
                  f"{loaded.max_positions} positions: their beginning was cut, their last tokens scored")
        for b in backends:
            r = results[b.name]
            tops = "  ".join(f"top{k}={r['top_n'][str(k)]:.4f}" for k in top_ns)
            print(f"  {label(b):<26} {tops}  token_ppl={r['token_perplexity']:.4g}  seq_ppl={r['seq_perplexity']:.4g}")
        if cfg.quantize is not None and "frameworks" in results:
            reference = results["frameworks"]
            print(f"{cfg.quantize.scheme} (block {cfg.quantize.block_size}) against frameworks "
                  f"({reference['precision']} on {reference['device']}):")
            for b in backends:
                r = results[b.name]
                if b.name != "frameworks":
                    print(f"  {label(b):<26} {describe(r['delta_to_fp32'])}  {'within' if r['within_gate'] else 'OUTSIDE'} "
                          f"the {cfg.quantize.scheme} gate")
