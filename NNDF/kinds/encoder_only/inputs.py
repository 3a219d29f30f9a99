"""Encoder examples in, feeds out: tokenized (right-padded, as BERT tokenizers pad) or as pixel
values, with what post-processing needs to map outputs back to text (`Batch`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataclasses import dataclass

import numpy as np

from NNDF.base.errors import UsageError
from NNDF.kinds.encoder_only.data import check_qa, dataset
from NNDF.kinds.encoder_only.tasks import Task
from NNDF.models.images import ImageSettings, as_source, open_image, pixel_values

if TYPE_CHECKING:   # annotations only
    from NNDF.kinds.encoder_only.model import EncoderModel


@dataclass
class Batch:
    """One batch fed to a backend, with what post-processing needs to map outputs back to text."""

    feed: dict[str, np.ndarray]
    examples: list[dict]
    offsets: np.ndarray | None = None          # (rows, seq, 2) character spans of the tokens
    special: np.ndarray | None = None          # (rows, seq) 1 for [CLS]/[SEP]/padding
    sequence_ids: list[list[int | None]] | None = None   # QA: 0 question, 1 context, None special
    word_ids: list[list[int | None]] | None = None       # QA: the word of each token (None special)


def encode(loaded: EncoderModel, examples: list[dict], pad_to: int | None = None) -> Batch:
    """Feeds for one batch of examples (right-padded, as BERT tokenizers pad)."""
    if loaded.is_image:
        return Batch({"pixel_values": image_pixels(loaded, [ex["image"] for ex in examples])}, examples)
    tok = loaded.tokenizer
    common = dict(truncation=True if loaded.task is not Task.QUESTION_ANSWERING else "only_second",
                  max_length=loaded.max_positions, return_tensors="np", return_offsets_mapping=True,
                  return_special_tokens_mask=True, padding="max_length" if pad_to else True)
    if pad_to:
        common["max_length"] = pad_to
    if loaded.task is Task.QUESTION_ANSWERING:
        for ex in examples:
            check_qa(ex)
        enc = tok([ex["question"] for ex in examples], [ex["context"] for ex in examples], **common)
    else:
        enc = tok([ex["text"] for ex in examples], **common)
    feed = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
    if loaded.layout.uses_token_types:
        types = enc.get("token_type_ids")
        feed["token_type_ids"] = np.zeros_like(feed["input_ids"]) if types is None else types.astype(np.int64)
    special = np.maximum(enc["special_tokens_mask"], 1 - feed["attention_mask"])
    qa = loaded.task is Task.QUESTION_ANSWERING
    seq_ids = [enc.sequence_ids(i) for i in range(len(examples))] if qa else None
    word_ids = [enc.word_ids(i) for i in range(len(examples))] if qa else None
    return Batch(feed, examples, enc["offset_mapping"], special, seq_ids, word_ids)


def image_pixels(loaded: EncoderModel, sources: list[str]) -> np.ndarray:
    """(batch, 3, H, W) as the model's HF image processor makes them (ViT: bilinear, mean/std 0.5)."""
    layout = loaded.layout
    height, width = loaded.image_size
    settings = ImageSettings(height, width, layout.image_mean, layout.image_std, "bilinear")
    return pixel_values([open_image(as_source(s), loaded.image_dirs) for s in sources], settings)


def random_batch(loaded: EncoderModel, batch_size: int, seq_len: int, seed: int) -> dict[str, np.ndarray]:
    """Benchmark input: seeded random tokens of exactly seq_len (or random pixels), no padding."""
    rng = np.random.default_rng(seed)
    if loaded.is_image:
        h, w = loaded.image_size
        return {"pixel_values": rng.standard_normal((batch_size, loaded.config.num_channels, h, w)).astype(np.float32)}
    if seq_len > loaded.max_positions:
        raise UsageError(f"--input-seq-len {seq_len} exceeds {loaded.variant}'s {loaded.max_positions} positions",
                         "lower --input-seq-len")
    vocab = min(loaded.config.vocab_size, len(loaded.tokenizer))
    ids = rng.integers(0, vocab, size=(batch_size, seq_len), dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if loaded.layout.uses_token_types:
        types = np.zeros_like(ids)
        types[:, seq_len // 2:] = 1      # a question and a context, as QA feeds them
        feed["token_type_ids"] = types
    return feed


def calibration_feeds(loaded: EncoderModel, batch_size: int = 8, batches: int = 4) -> list[dict]:
    """Feeds of the family's shipped training data for the task (the int8 activation ranges)."""
    if loaded.calibration_path is None:
        raise UsageError(f"{loaded.variant} ({loaded.task.value}) has no shipped calibration data for int8",
                         "drop --quantize for trt, or use onnxrt's dynamic int8")
    rows = dataset(loaded, loaded.calibration_path, check_labels=False)[: batch_size * batches]
    return [encode(loaded, rows[i:i + batch_size]).feed for i in range(0, len(rows), batch_size)]
