"""Tiny encoder-decoders that have learned something.

A randomly initialised tiny encoder-decoder tends to repeat one token forever,
so "same tokens as PyTorch" would prove little and run/chat would show nothing.
A short, seeded memorisation run on the shipped text pairs (translations,
summaries, T5's task prefixes) fixes that. The result is cached on disk, keyed
by everything that shapes it, so it is trained once per machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
import transformers

from NNDF.base.errors import UsageError
from NNDF.base.hashing import file_digest, stable_hash
from NNDF.base.progress import progress
from NNDF.export.workdir import WorkingDir, discard
from NNDF.models.tokenizers import DATA_DIR
from NNDF.runtime.placement import torch_threads

PAIRS_FILE = DATA_DIR / "seq2seq_pairs.tsv"
TRAINING_VERSION = 1
WEIGHTS = "model.pt"


def cache_root() -> Path:
    return Path(os.environ.get("HF_TRT_TOOLKIT_CACHE", "~/.cache/hf-trt-toolkit")).expanduser() / "tiny"


def read_pairs(path: Path = PAIRS_FILE) -> list[tuple[str, str]]:
    rows = [line.rstrip("\n").split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(source, target) for source, target in rows]


def memorize(model, tokenizer, pairs: list[tuple[str, str]], steps: int, lr: float, seed: int) -> None:
    """Full-batch AdamW on teacher-forced cross-entropy until the pairs are learned."""
    torch.manual_seed(seed)
    enc = tokenizer([s for s, _ in pairs], return_tensors="pt", padding=True)
    labels = tokenizer([t for _, t in pairs], return_tensors="pt", padding=True)["input_ids"]
    labels[labels == tokenizer.pad_token_id] = -100
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    # one thread: for a model this small, a second one only adds synchronisation (and on a
    # busy machine OpenMP barriers made training 4x slower)
    with torch_threads(1):
        for _ in progress(range(steps), "training the tiny model (once per machine)"):
            loss = model(**enc, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()


def cache_dir() -> WorkingDir:
    """The tiny-model cache, checked to be a writable directory before any training."""
    return WorkingDir(cache_root(), what="tiny-model cache",
                      fix="point HF_TRT_TOOLKIT_CACHE (or HOME) at a writable directory")


def trained_tiny(name: str, seed: int, build: Callable[[], tuple], steps: int, lr: float) -> tuple:
    """(model, tokenizer) for a tiny variant: loaded from the cache, or built, trained and cached.

    The cache is a WorkingDir artifact: a truncated or changed `model.pt` is retrained, not loaded."""
    cache = cache_dir()
    model, tokenizer = build()
    key = {"name": name, "seed": seed, "steps": steps, "lr": lr, "version": TRAINING_VERSION,
           "pairs": file_digest(PAIRS_FILE), "transformers": transformers.__version__,
           "torch": torch.__version__.split("+")[0], "config": stable_hash(model.config.to_dict()),
           "cache_format": 2}

    def train() -> None:
        memorize(model, tokenizer, read_pairs(), steps, lr, seed)

    _trained_weights(cache, cache.artifact_dir(f"{name}-{stable_hash(key)}"), key, model, train)
    return model, tokenizer


def cached_training(name: str, seed: int, model, train: Callable[[], None], data_files: tuple[Path, ...],
                    recipe: dict, version: int = 1):
    """`model` with trained weights: loaded from the tiny-model cache, or `train()`ed (in place) and
    cached. Keyed by the data files' bytes, the recipe (steps, learning rate ...), the config, seed
    and library versions; a damaged cache
    entry is retrained, as for `trained_tiny`. Encoder families use it with their own training loop."""
    cache = cache_dir()
    key = {"name": name, "seed": seed, "version": version, "data": [file_digest(p) for p in data_files], "recipe": recipe,
           "transformers": transformers.__version__, "torch": torch.__version__.split("+")[0],
           "config": stable_hash(model.config.to_dict())}

    def seeded_train() -> None:
        torch.manual_seed(seed)
        model.train()
        with torch_threads(1):   # as memorize: a second thread only adds synchronisation for a model this small
            train()

    _trained_weights(cache, cache.artifact_dir(f"{name}-{stable_hash(key)}"), key, model, seeded_train)
    return model


def _trained_weights(cache: WorkingDir, path: Path, key: dict, model, train: Callable[[], None]) -> None:
    """Put the cached weights at `path` into `model` (eval mode), training and caching them first
    where the entry is missing or stale; an entry whose file cannot be loaded is discarded and
    retrained once."""
    trained = []

    def produce(tmp: Path) -> None:
        train()
        torch.save(model.state_dict(), tmp / WEIGHTS)
        trained.append(True)

    for _ in range(2):
        artifact = cache.build(path, key, (WEIGHTS,), produce)
        if not trained:
            try:
                model.load_state_dict(torch.load(artifact.file(WEIGHTS), map_location="cpu", weights_only=True))
            except Exception as e:  # torch raises several types for a damaged file whose size and mtime were kept
                with WorkingDir.lock(path):
                    if path.exists():
                        discard(path, f"{WEIGHTS} cannot be loaded ({type(e).__name__})")
                continue
        model.eval()
        return
    raise UsageError(f"the tiny-model cache {path} cannot be loaded even after retraining",
                     "delete it, or point HF_TRT_TOOLKIT_CACHE at another directory")
