"""Helpers the actions share: prompt batching and the result file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from NNDF.config import RunConfig
from NNDF.errors import UsageError
from NNDF.family import LoadedModel


def encode_batch(loaded: LoadedModel, prompts: list[str], use_mask: bool, max_new_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokenize prompts into one batch; different lengths need --use-mask (left padding).

    A family whose prompts are more than text (image-to-text: a prompt names an image)
    gives its loaded model an `encode_prompts` with this signature; its backends take
    what that returns in place of the ids.
    """
    family_encoder = getattr(loaded, "encode_prompts", None)
    if family_encoder is not None:
        return family_encoder(prompts, use_mask, max_new_tokens)
    tok = loaded.tokenizer
    encoded = [tok(p)["input_ids"] for p in prompts]
    lengths = {len(e) for e in encoded}
    if len(lengths) > 1 and not use_mask:
        raise UsageError("prompts of different lengths in one batch need an attention mask", "add --use-mask")
    if 0 in lengths:
        raise UsageError("an empty prompt has nothing to continue", "type some text")
    longest = max(lengths)
    if not loaded.model.config.is_encoder_decoder and longest + max_new_tokens > loaded.max_positions:
        raise UsageError(f"prompt of {longest} tokens plus {max_new_tokens} new tokens exceeds the model's "
                         f"{loaded.max_positions} positions", "shorten the prompt or lower --output-seq-len")
    pad = tok.pad_token_id if tok.pad_token_id is not None else loaded.generation_defaults["pad_token_id"]
    ids = np.full((len(encoded), longest), pad, np.int64)
    mask = np.zeros((len(encoded), longest), np.int64)
    for row, e in enumerate(encoded):
        ids[row, longest - len(e):] = e
        mask[row, longest - len(e):] = 1
    return ids, mask


def output_text(loaded: LoadedModel, prompt: str, new_tokens: np.ndarray) -> str:
    """What the model says: prompt + continuation for decoder-only models, the answer for encoder-decoders
    (or what the loaded model's own `output_text` makes of it, e.g. a caption)."""
    from NNDF.tokenizer import decode_safely

    family_output = getattr(loaded, "output_text", None)
    if family_output is not None:
        return family_output(prompt, new_tokens)
    eos = loaded.generation_defaults["eos_token_id"]
    tokens = [int(t) for t in new_tokens]
    if eos is not None and eos in tokens:
        tokens = tokens[: tokens.index(eos)]
    text = decode_safely(loaded.tokenizer, tokens)
    return text if loaded.model.config.is_encoder_decoder else prompt + text


def save_json(path: Path | None, result: dict) -> None:
    """Write atomically so a reader never sees half a file."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(result, f, indent=2, sort_keys=False, default=float)
    os.replace(tmp, path)


def settings_dict(cfg: RunConfig) -> dict:
    g = cfg.generation
    return {"family": cfg.family, "variant": cfg.variant, "backends": list(cfg.backends), "batch_size": cfg.batch_size,
            "use_cache": g.use_cache, "num_beams": g.num_beams, "fp16": cfg.fp16, "use_mask": cfg.use_mask,
            "max_new_tokens": g.max_new_tokens, "min_new_tokens": g.min_new_tokens}


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])
