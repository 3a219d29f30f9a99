"""What the tests of the decoders written from the weights (tests/test_gpt2_graph.py,
tests/test_llama_graph.py) share: PyTorch's logits, padded batches, and an in-place cache fed a few
tokens per call."""

from __future__ import annotations

import numpy as np
import torch

from NNDF.base.config import GenerationSettings
from NNDF.export import weights_graph
from NNDF.graphs.axes import positions_from_mask
from NNDF.runtime.inplace_cache import InPlaceCacheDecoder


def hf_logits(model, ids, mask) -> np.ndarray:
    """The model's logits over whole sequences, positions from the mask as HF generate makes them."""
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                     position_ids=torch.from_numpy(positions_from_mask(mask))).logits.numpy()


def batch(rows: int, length: int, side: str, seed: int = 0):
    """Random ids; with several rows, row 0 padded by 3 and row 2 by 1 on `side`."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 512, (rows, length)).astype(np.int64)
    mask = np.ones_like(ids)
    for row, pads in ((0, 3), (2, 1))[: rows - 1]:
        if side == "left":
            mask[row, :pads] = 0
        else:
            mask[row, length - pads:] = 0
    return ids, mask



def logits_by_calls(steps: InPlaceCacheDecoder, ids, mask, past: int, new: int) -> np.ndarray:
    """The caller's positions past.. fed `new` at a time on a cache holding the first `past` (or, past 0,
    the whole sequence in one call): each call's logits of every position it feeds."""
    state, ids, _ = steps.start(ids, mask)
    if past:
        steps.advance(state, ids[:, :past])
    stops = range(past + new, ids.shape[1] + new, new) if past else [ids.shape[1]]
    return np.concatenate([steps.advance(state, ids[:, :min(stop, ids.shape[1])], all_logits=True) for stop in stops], 1)


def assert_tokens_equal_hf_generate(loaded, backends: dict, num_beams: int) -> None:
    """onnxrt's in-place decoder gives HF generate's tokens for a left-padded batch of 3 (greedy or beam),
    and seeded sampling repeats itself and streams the tokens it returns."""
    assert isinstance(backends["onnxrt"].steps, InPlaceCacheDecoder)
    texts = ["The lighthouse keeper", "Clara baked bread every morning for the whole village", "Ben"]
    enc = loaded.tokenizer(texts, return_tensors="np", padding=True, padding_side="left")
    ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
    settings = GenerationSettings(max_new_tokens=24, num_beams=num_beams, use_cache=True, min_new_tokens=5)
    want = backends["frameworks"].generate(ids, mask, settings).tokens
    got = backends["onnxrt"].generate(ids, mask, settings).tokens
    np.testing.assert_array_equal(got, want)
    sampled = GenerationSettings(max_new_tokens=12, do_sample=True, top_k=20, top_p=0.9, temperature=0.8, seed=3)
    streamed = []
    first = backends["onnxrt"].generate(ids, mask, sampled, on_step=streamed.append).tokens
    np.testing.assert_array_equal(first, backends["onnxrt"].generate(ids, mask, sampled).tokens)   # seeded
    np.testing.assert_array_equal(np.stack(streamed, 1), first)


def greedy_steps(decoder, cache, tokens: list[list[int]], n: int):
    """`n` greedy steps of a continuous batch, each row's token appended to its list in `tokens`."""
    for _ in range(n):
        cache, logits = decoder.step(cache, np.array([t[-1] for t in tokens]))
        for t, row in zip(tokens, logits):
            t.append(int(np.argmax(row)))
    return cache


def fake_quantized(model, bits: int, block: int):
    """`model` with every linear weight (nn.Linear, GPT2's Conv1D; the LM head included) replaced by what
    quantize_blocks stores."""
    copy = type(model)(model.config).eval()
    copy.load_state_dict(model.state_dict())
    with torch.no_grad():
        for module in copy.modules():
            linear = isinstance(module, torch.nn.Linear)
            if linear or type(module).__name__ == "Conv1D":
                w = module.weight.numpy() if linear else module.weight.numpy().T      # [out, in]
                packed, scales = weights_graph.quantize_blocks(w, bits, block)
                back = weights_graph.dequantize_blocks(packed, scales, bits, w.shape[1])
                module.weight.copy_(torch.from_numpy(back if linear else back.T.copy()))
    return copy


def assert_computes_with_stored_weights(model, steps: InPlaceCacheDecoder, bits: int, block: int, cases) -> None:
    """The quantized graph (`steps`) against PyTorch holding the same quantized weights, at `cases`' (rows,
    past, new tokens per call): its arithmetic, apart from quantization itself, is exact; and quantizing
    did change the logits."""
    reference = fake_quantized(model, bits, block)
    for rows, past, new in cases:
        ids, mask = batch(rows, past + 12, "left", seed=past)
        want = hf_logits(reference, ids, mask)[:, past:]
        got = logits_by_calls(steps, ids, mask, past, new)
        assert np.abs(got - want)[mask[:, past:] == 1].max() <= 1e-4 * np.abs(want).max()
    assert np.abs(hf_logits(reference, ids, mask) - hf_logits(model, ids, mask)).max() > 1e-3   # it did quantize
