"""Small byte-level BPE tokenizers trained offline on the bundled sample corpus.

No tokenizer can be downloaded from a hub here, so models built from configs get a tiny
tokenizer trained on ``data/tokenizer_corpus.txt`` and ``data/lambada_sample.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2TokenizerFast, PreTrainedTokenizerBase, PreTrainedTokenizerFast

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
DEFAULT_CORPUS: tuple[Path, ...] = (DATA_DIR / "tokenizer_corpus.txt", DATA_DIR / "lambada_sample.jsonl")


def _iter_corpus(paths: Iterable[Path]) -> Iterator[str]:
    for path in paths:
        with Path(path).open(encoding="utf-8") as handle:
            for line in handle:
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                yield json.loads(line)["text"] if Path(path).suffix == ".jsonl" else line


def build_byte_level_bpe(
    vocab_size: int = 512,
    special_tokens: list[str] = ["<|endoftext|>"],  # noqa: B006 - never mutated
    corpus_paths: list[Path] | None = None,
) -> Tokenizer:
    """Train a deterministic byte-level BPE on the bundled corpus, since no hub tokenizer is reachable.

    ``special_tokens`` get the first ids, in the order given.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    paths = list(corpus_paths) if corpus_paths is not None else list(DEFAULT_CORPUS)
    tokenizer.train_from_iterator(_iter_corpus(paths), trainer=trainer)
    return tokenizer


def gpt2_style_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """GPT-2-like tokenizer (``<|endoftext|>`` as bos/eos/unk/pad) for decoder-only models."""
    tokenizer = GPT2TokenizerFast(
        tokenizer_object=build_byte_level_bpe(vocab_size, ["<|endoftext|>"]),
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _wrapped_tokenizer(
    vocab_size: int, specials: list[str], single: str, pair: str, **roles: str
) -> PreTrainedTokenizerFast:
    backend = build_byte_level_bpe(vocab_size, specials)
    used = [tok for tok in specials if tok in single.split()]
    backend.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(tok, backend.token_to_id(tok)) for tok in used]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, **roles)


def t5_style_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """T5-like tokenizer (``<pad>``=0, ``</s>``=1, ``<unk>``=2; appends ``</s>``) for encoder-decoder tests."""
    return _wrapped_tokenizer(
        vocab_size,
        ["<pad>", "</s>", "<unk>"],
        "$A </s>",
        "$A </s> $B:1 </s>:1",
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
    )


def bart_style_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """BART-like tokenizer (``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3; wraps as ``<s> ... </s>``)."""
    return _wrapped_tokenizer(
        vocab_size,
        ["<s>", "<pad>", "</s>", "<unk>"],
        "<s> $A </s>",
        "<s> $A </s> </s> $B:1 </s>:1",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def pad_rows(rows, pad: int, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Token rows of different lengths as one (ids, attention mask) batch, padded with `pad` on the
    "left" (prompts to continue) or the "right" (texts scored from their first token)."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad, np.int64)
    mask = np.zeros((len(rows), width), np.int64)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, span], mask[i, span] = r, 1
    return ids, mask


def decode_safely(tokenizer: PreTrainedTokenizerBase, ids: Iterable[int]) -> str:
    """Decode ``ids`` skipping special tokens, showing ids outside the vocabulary as ``<id:N>``.

    Random-weight full-size models emit ids far beyond a tiny tokenizer's vocabulary.
    """
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    size = len(tokenizer)
    pieces: list[str] = []
    run: list[int] = []
    for token_id in (int(i) for i in ids):
        if 0 <= token_id < size:
            run.append(token_id)
            continue
        if run:
            pieces.append(tokenizer.decode(run, skip_special_tokens=True))
            run = []
        pieces.append(f"<id:{token_id}>")
    if run:
        pieces.append(tokenizer.decode(run, skip_special_tokens=True))
    return "".join(pieces)
