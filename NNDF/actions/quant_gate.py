"""The accuracy gate for quantized graphs: how far a quantized backend's LAMBADA numbers may move
from the fp32 reference's (teacher-forced, so every position sees the true previous tokens).

The bounds hold both the token and the sequence perplexity, relative to fp32. int8 is held to 1%.
int4's 10% comes from measuring the tiny trained models (`benchmarks/quant_accuracy.py`, README
"Quantization"): correct int4 weights moved them by at most 5.7%, a planted scale-axis bug by at
least 28%, so 10% leaves room on both sides.
"""

from __future__ import annotations

MAX_RELATIVE_PERPLEXITY = {"int8": 0.01, "int4": 0.10}


def delta_to_fp32(fp32: dict, quantized: dict) -> dict:
    """How an `accuracy` result moved from the fp32 one: relative token/sequence perplexity and top-1."""
    return {
        "token_perplexity_rel": quantized["token_perplexity"] / fp32["token_perplexity"] - 1.0,
        "seq_perplexity_rel": quantized["seq_perplexity"] / fp32["seq_perplexity"] - 1.0,
        "top1_delta": quantized["top_n"]["1"] - fp32["top_n"]["1"],
    }


def passes(scheme: str, delta: dict) -> bool:
    bound = MAX_RELATIVE_PERPLEXITY[scheme]
    return abs(delta["token_perplexity_rel"]) <= bound and abs(delta["seq_perplexity_rel"]) <= bound


def describe(delta: dict) -> str:
    return (f"token_ppl {delta['token_perplexity_rel'] * 100:+.2f}%  seq_ppl {delta['seq_perplexity_rel'] * 100:+.2f}%  "
            f"top1 {delta['top1_delta']:+.4f}")
