"""The names on every graph's boundary, and the sizes a generation feeds them.

Graph code (decoder-only, encoder-decoder, image-to-text) names its dynamic axes
and cache tensors with these; `trt_profiles` turns the axes into optimization
profiles and the step models check a run against them, so neither needs the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BATCH = "batch"          # rows: batch size x beams
SEQ = "seq"              # tokens fed in one step
PAST = "past_len"        # positions already in the KV cache
TOTAL = "total_len"      # past + seq: the attention mask's length
KEPT = "kept"            # positions whose logits are computed
ENC = "enc_seq"          # encoder input length (encoder-decoders)


def kv_names(prefix: str, n_layers: int) -> list[str]:
    """Flat cache tensor names, key then value per layer: past_key_values.0.key, ..."""
    return [f"{prefix}.{i}.{kind}" for i in range(n_layers) for kind in ("key", "value")]


@dataclass(frozen=True)
class RunSizes:
    """What one run feeds its graphs: the engine profiles are derived from it."""

    batch_size: int
    num_beams: int
    prompt_len: int       # benchmark prompt length; the profile's optimum, not its bound
    new_tokens: int

    @classmethod
    def of(cls, cfg) -> "RunSizes":
        """From a RunConfig."""
        return cls(cfg.batch_size, cfg.generation.num_beams, cfg.input_seq_len, cfg.generation.max_new_tokens)


def largest_sizes(rows: int, prompt_len: int, new_tokens: int, with_cache: bool) -> dict[str, int]:
    """The largest size of each axis a decoder fed the prompt then its own tokens reaches.

    The last new token is never fed back, so the final step sees prompt + new - 1 tokens. With a
    cache the prompt is the longest input and every later step feeds one token on the past.
    """
    last = prompt_len + max(new_tokens, 1) - 1
    if not with_cache:
        return {BATCH: rows, SEQ: last, TOTAL: last, KEPT: 1}
    return {BATCH: rows, SEQ: prompt_len, PAST: last - 1 if new_tokens > 1 else 0, TOTAL: last, KEPT: 1}


def run_description(rows: int, prompt_len: int, new_tokens: int) -> str:
    return f"{rows} row(s) with a {prompt_len}-token prompt and {new_tokens} new tokens"


def positions_from_mask(mask: np.ndarray) -> np.ndarray:
    """Position ids as HF generate derives them: count of real tokens so far; pads get 1."""
    pos = np.cumsum(mask, axis=1) - 1
    return np.where(mask == 0, 1, pos).astype(np.int64)
