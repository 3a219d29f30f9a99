"""Decoder-only graphs: what differs between architectures at the boundary (`DecoderOnlyLayout`),
the flat-tensor wrapper around a HF causal LM, and the decoder's GraphSpec with and without cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from NNDF.graphs.axes import BATCH, KEPT, PAST, SEQ, TOTAL, kv_names, positions_from_mask
from NNDF.graphs.cache_io import cache_from_flat, flat_from_cache
from NNDF.graphs.inplace_io import inplace_axes
from NNDF.graphs.spec import GraphSpec, padded_mask, random_tensors

if TYPE_CHECKING:
    from NNDF.export.weights_graph import FromWeights


@dataclass(frozen=True)
class DecoderOnlyLayout:
    """How one decoder-only architecture differs at its graph boundary."""

    uses_position_ids: bool = True
    past_axes: dict[int, str] = field(default_factory=lambda: {0: BATCH, 2: PAST})      # (batch, heads, past, dim)
    present_axes: dict[int, str] = field(default_factory=lambda: {0: BATCH, 2: TOTAL})
    fp16_keep_fp32_ops: tuple[str, ...] = ()
    fp16_keep_fp32_node_patterns: tuple[str, ...] = ()   # substrings of ONNX node names kept in fp32 (GraphSpec)
    ort_fusions: str | None = None      # onnxruntime.transformers model_type whose fusions onnxrt applies
    ort_rotary: bool = False            # onnxrt fuses rotary embeddings with the model's cos/sin table
    # the writer (NNDF/export/weights_graph.py's FromWeights: llama_graph.WRITER, gpt2_graph.WRITER) of the
    # decoder onnxrt runs with an in-place KV cache wherever that graph serves the model and the run
    # (kinds' backends.py); None: onnxrt always runs the traced decoder
    onnxrt_from_weights: FromWeights | None = None

    def num_layers(self, config) -> int:
        return config.num_hidden_layers

    def asks_from_weights(self, cfg) -> bool:
        """Whether the run asks onnxrt for the decoder written from the weights rather than the traced
        one: the layout names a writer, with the KV cache, fp32 activations, no --decoder-onnx, on ONNX
        Runtime's CPU provider (its GroupQueryAttention on CUDA takes fp16 only)."""
        from NNDF.runtime.ort_session import providers_for

        return bool(self.onnxrt_from_weights and cfg.generation.use_cache and not cfg.fp16 and not cfg.require_cuda
                    and "decoder" not in cfg.trt.prebuilt_onnx and providers_for(not cfg.cpu)[0] == "CPUExecutionProvider")

    def writes_from_weights(self, config, cfg) -> bool:
        """asks_from_weights, for a model (config) the written graph serves."""
        return self.asks_from_weights(cfg) and self.onnxrt_from_weights.unsupported(config) is None


def kv_shape(config, batch: int, length: int) -> tuple[int, ...]:
    """(batch, kv heads, length, head_dim) from the config: grouped-query attention keeps
    num_key_value_heads heads, and some models set head_dim apart from hidden_size / heads."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return (batch, kv_heads, length, head_dim)


class DecoderOnlyWrapper(torch.nn.Module):
    """Flat tensors in and out around a HF causal LM, so the graph has no Cache objects."""

    def __init__(self, model, layout: DecoderOnlyLayout, with_cache: bool):
        super().__init__()
        self.model, self.layout, self.with_cache = model, layout, with_cache
        self.n_layers = layout.num_layers(model.config)

    def forward(self, input_ids, attention_mask, logits_index, *rest):
        position_ids = None
        if self.layout.uses_position_ids:
            position_ids, rest = rest[0], rest[1:]
        cache = cache_from_flat(rest, self.n_layers, self.model.config) if self.with_cache else None
        kwargs = {"position_ids": position_ids} if position_ids is not None else {}
        # Only the positions in logits_index go through the vocabulary projection: generation
        # needs the last one, accuracy all of them (the projection is most of a prefill's work).
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache,
                         use_cache=self.with_cache, logits_to_keep=logits_index, **kwargs)
        if not self.with_cache:
            return out.logits
        return (out.logits, *flat_from_cache(out.past_key_values))


def decoder_spec(model, layout: DecoderOnlyLayout, with_cache: bool) -> GraphSpec:
    config = model.config
    n_layers = layout.num_layers(config)
    inputs: dict[str, dict[int, str]] = {"input_ids": {0: BATCH, 1: SEQ}, "attention_mask": {0: BATCH, 1: TOTAL},
                                         "logits_index": {0: KEPT}}
    if layout.uses_position_ids:
        inputs["position_ids"] = {0: BATCH, 1: SEQ}
    outputs: dict[str, dict[int, str]] = {"logits": {0: BATCH, 1: KEPT}}
    if with_cache:
        inputs.update({n: dict(layout.past_axes) for n in kv_names("past_key_values", n_layers)})
        outputs.update({n: dict(layout.present_axes) for n in kv_names("present", n_layers)})

    def make_inputs(sizes: dict[str, int]) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(sum(sizes.values()))
        b, s, p = sizes[BATCH], sizes[SEQ], sizes.get(PAST, 0) if with_cache else 0
        mask = padded_mask(b, p + s, "left")
        kept = sizes.get(KEPT, s)
        feed = {"input_ids": torch.randint(0, config.vocab_size, (b, s), generator=gen), "attention_mask": mask,
                "logits_index": torch.arange(s - kept, s)}
        if layout.uses_position_ids:
            feed["position_ids"] = torch.from_numpy(positions_from_mask(mask.numpy())[:, p:])
        if with_cache:
            feed.update(random_tensors(kv_names("past_key_values", n_layers), kv_shape(config, b, p), gen))
        return feed

    trace = {BATCH: 2, SEQ: 3, PAST: 5} if with_cache else {BATCH: 2, SEQ: 7}
    verify = (({BATCH: 1, SEQ: 1, PAST: 37}, {BATCH: 3, SEQ: 4, PAST: 0}, {BATCH: 2, SEQ: 6, PAST: 3, KEPT: 1})
              if with_cache else ({BATCH: 3, SEQ: 11}, {BATCH: 1, SEQ: 5, KEPT: 1}))
    return GraphSpec(
        name="decoder" if with_cache else "decoder_nocache",
        inputs=inputs, outputs=outputs,
        make_module=lambda m: DecoderOnlyWrapper(m, layout, with_cache),
        make_inputs=make_inputs, trace_sizes=trace, verify_sizes=verify,
        fp16_keep_fp32_ops=layout.fp16_keep_fp32_ops, fp16_keep_fp32_node_patterns=layout.fp16_keep_fp32_node_patterns,
    )


def inplace_spec(n_layers: int) -> GraphSpec:
    """The decoder written from the weights with an in-place KV cache (NNDF/graphs/inplace_io.py): nothing
    to trace, so no module or dummy inputs."""
    inputs, outputs = inplace_axes(n_layers)
    return GraphSpec(name="decoder", inputs=inputs, outputs=outputs, make_module=None, make_inputs=None,
                     trace_sizes={})
