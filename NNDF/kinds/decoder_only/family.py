"""A decoder-only family: what a family folder (GPT2, OPT, BLOOM, LLAMA) declares.

It builds one `DecoderOnlyFamily` with its variants and a `DecoderOnlyLayout` per model type; the
graph (graphs.py), step model (steps.py) and backends (backends.py) are made from that, so the
folder's export.py, frameworks.py, onnxrt.py and trt.py stay a line each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from transformers import AutoModelForCausalLM, DynamicCache

from NNDF.graphs.spec import GraphSpec
from NNDF.kinds.decoder_only.graphs import decoder_spec
from NNDF.models.family import LoadedModel, ModelFamily
from NNDF.models.tokenizers import gpt2_style_tokenizer


def trained_positions(config) -> int:
    """The trained length, or a sliding window if the model's cache has one (Mistral): the exported
    cache keeps every position, and attention past a window is not verified."""
    sliding = any(getattr(layer, "is_sliding", False) for layer in DynamicCache(config=config).layers)
    return min(config.max_position_embeddings, config.sliding_window) if sliding else config.max_position_embeddings


@dataclass
class DecoderOnlyFamily(ModelFamily):
    """The usual decoder-only defaults: a causal LM, the shipped byte-level tokenizer for random
    weights, and the trained length (or sliding window) as the longest sequence."""

    model_class: type = AutoModelForCausalLM
    fallback_tokenizer: Callable[[], Any] = field(default=lambda: gpt2_style_tokenizer(512))
    max_positions: Callable[[Any], int] = trained_positions
    kind = "decoder_only"

    def onnxrt_from_weights(self, config, cfg) -> bool:
        layout = self.layouts.get(self.arch_of(config))
        return "onnxrt" in cfg.backends and layout is not None and layout.writes_from_weights(config, cfg)

    def decoder_graph(self, loaded: LoadedModel, use_cache: bool) -> GraphSpec:
        return decoder_spec(loaded.model, self.layout(loaded), with_cache=use_cache)
