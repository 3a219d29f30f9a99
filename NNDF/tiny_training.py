"""Tiny encoder-decoders that have learned something.

A randomly initialised tiny encoder-decoder tends to repeat one token forever,
so "same tokens as PyTorch" would prove little and run/chat would show nothing.
A short, seeded memorisation run on the shipped text pairs (translations,
summaries, T5's task prefixes) fixes that. The result is cached on disk, keyed
by everything that shapes it, so it is trained once per machine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch
import transformers

from NNDF.backends import torch_threads
from NNDF.progress import progress
from NNDF.tokenizer import DATA_DIR
from NNDF.workdir import file_digest, stable_hash

PAIRS_FILE = DATA_DIR / "seq2seq_pairs.tsv"
TRAINING_VERSION = 1


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


def trained_tiny(name: str, seed: int, build: Callable[[], tuple], steps: int, lr: float) -> tuple:
    """(model, tokenizer) for a tiny variant: loaded from the cache, or built, trained and cached."""
    model, tokenizer = build()
    key = {"name": name, "seed": seed, "steps": steps, "lr": lr, "version": TRAINING_VERSION,
           "pairs": file_digest(PAIRS_FILE), "transformers": transformers.__version__,
           "torch": torch.__version__.split("+")[0], "config": stable_hash(model.config.to_dict())}
    path = cache_root() / f"{name}-{stable_hash(key)}"
    weights = path / "model.pt"
    if weights.is_file():
        model.load_state_dict(torch.load(weights, map_location="cpu"))
        model.eval()
        return model, tokenizer
    memorize(model, tokenizer, read_pairs(), steps, lr, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        torch.save(model.state_dict(), tmp / "model.pt")
        os.replace(tmp, path) if not path.exists() else shutil.rmtree(tmp)  # a racing process may have won
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model, tokenizer
