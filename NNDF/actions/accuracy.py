"""LAMBADA top-N accuracy and perplexity, with the original demo's definitions.

Per sample the last N tokens are targets and the rest is context; logits are
teacher-forced. Top-n accuracy averages over samples and tokens; token and
sequence perplexity are exp of the mean over samples of the mean cross-entropy
over targets / over every position after the first.

One departure from the demo, on purpose: a text longer than the model's
positions loses its beginning, not its end (the demo's `truncation=True` kept
the first positions, so the "last N tokens" came from the middle of the text).
How many samples were cut is printed and saved as `truncated_samples`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from NNDF.actions.common import identity, label
from NNDF.backends import Backend
from NNDF.config import RunConfig
from NNDF.data_checks import jsonl_texts
from NNDF.errors import UsageError
from NNDF.family import LoadedModel
from NNDF.generation import log_softmax
from NNDF.progress import progress
from NNDF.tokenizer import DATA_DIR

SHIPPED_SAMPLE = DATA_DIR / "lambada_sample.jsonl"


def load_texts(path: Path | None, num_samples: int) -> list[str]:
    if path is None:
        return _hub_lambada(num_samples)
    return jsonl_texts(path)[:num_samples]


def _hub_lambada(num_samples: int) -> list[str]:
    try:
        from datasets import load_dataset

        data = load_dataset("lambada", split="test")
        return [row["text"] for row in data.select(range(min(num_samples, len(data))))]
    except Exception:  # no datasets package, no network, or no hub: all mean the same to the user
        raise UsageError("could not load LAMBADA from the HuggingFace hub",
                         f"pass --dataset-path (a sample ships at {SHIPPED_SAMPLE})") from None


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


def score_sample(logits: np.ndarray, seq: np.ndarray, n_targets: int, top_ns: list[int]) -> dict:
    """logits[k] predicts seq[k + 1]."""
    logp = log_softmax(logits[:-1])
    nll = -logp[np.arange(len(seq) - 1), seq[1:]]
    predicted = logits[len(seq) - 1 - n_targets: len(seq) - 1]
    targets = seq[-n_targets:]
    ranks = (predicted > predicted[np.arange(n_targets), targets][:, None]).sum(axis=1)  # 0 = best
    return {"hits": {n: float(np.mean(ranks < n)) for n in top_ns},
            "target_nll": float(nll[-n_targets:].mean()), "seq_nll": float(nll.mean())}


def evaluate(backend: Backend, loaded: LoadedModel, texts: list[str], n_targets: int, top_ns: list[int]) -> dict:
    per_sample = []
    for text in progress(texts, f"accuracy [{backend.name}]"):
        seq, encoder = teacher_forced_sequence(loaded, text, n_targets)
        if encoder is None:
            logits = backend.logits(seq[None], np.ones((1, len(seq)), np.int64))[0]
        else:
            logits = backend.logits(encoder[None], np.ones((1, len(encoder)), np.int64), seq[None])[0]
        per_sample.append(score_sample(logits, seq, n_targets, top_ns))
    return {
        "top_n": {str(n): float(np.mean([s["hits"][n] for s in per_sample])) for n in top_ns},
        "token_perplexity": float(np.exp(np.mean([s["target_nll"] for s in per_sample]))),
        "seq_perplexity": float(np.exp(np.mean([s["seq_nll"] for s in per_sample]))),
        "num_samples": len(per_sample),
        "truncated_samples": sum(kept_tokens(loaded, text)[1] for text in texts),
    }


def run(cfg: RunConfig, loaded: LoadedModel, backends: list[Backend]) -> dict:
    texts = load_texts(cfg.dataset_path, cfg.num_samples)
    top_ns = sorted({1, 10, cfg.top_n})
    results = {b.name: {**identity(b), **evaluate(b, loaded, texts, cfg.tokens_to_generate, top_ns)} for b in backends}
    print(f"LAMBADA accuracy, {len(texts)} samples, last {cfg.tokens_to_generate} tokens as targets")
    cut = next(iter(results.values()))["truncated_samples"]
    if cut:
        print(f"  {cut} of {len(texts)} samples are longer than the model's {loaded.max_positions} positions: "
              f"their beginning was cut, their last tokens scored")
    for b in backends:
        r = results[b.name]
        tops = "  ".join(f"top{n}={r['top_n'][str(n)]:.4f}" for n in top_ns)
        print(f"  {label(b):<26} {tops}  token_ppl={r['token_perplexity']:.4g}  seq_ppl={r['seq_perplexity']:.4g}")
    if cfg.quantize is not None and "frameworks" in results:
        from NNDF.quant_accuracy import delta_to_fp32, describe, passes

        reference = results["frameworks"]
        print(f"{cfg.quantize.scheme} (block {cfg.quantize.block_size}) against frameworks "
              f"({reference['precision']} on {reference['device']}):")
        for b in backends:
            r = results[b.name]
            if b.name != "frameworks":
                r["delta_to_fp32"] = delta_to_fp32(reference, r)
                r["within_gate"] = passes(cfg.quantize.scheme, r["delta_to_fp32"])
                print(f"  {label(b):<26} {describe(r['delta_to_fp32'])}  {'within' if r['within_gate'] else 'OUTSIDE'} "
                      f"the {cfg.quantize.scheme} gate")
    return {"action": "accuracy", "num_samples": len(texts), "tokens_to_generate": cfg.tokens_to_generate,
            "truncated_samples": cut, "results": results}
