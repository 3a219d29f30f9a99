"""The IO contract of a decoder graph that writes its KV cache in place (NNDF/export/llama_graph.py and
gpt2_graph.py write one, NNDF/runtime/inplace_cache.py drives it).

  inputs   input_ids [batch, seq]          each row's new tokens, left-aligned (a row with fewer real
                                           tokens than `seq` is padded at its end)
           query_lengths [batch] int32     how many of a row's `seq` tokens are real
           total_lengths [batch] int32     the row's tokens in its cache after this call
           logit_positions [batch, kept]   per row, which of its `seq` positions are projected onto
                                           the vocabulary (the last real one during generation)
           past_key_values.{i}.key/.value  [batch, kv_heads, capacity, head_dim]
  outputs  logits [batch, kept, vocab];  present.{i}.key/.value: the same buffers, written in place

Each row keeps its own tokens in cache slots 0 .. total-1, in order, so a token's slot is its position.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from NNDF.graphs.axes import BATCH, KEPT, SEQ, kv_names

if TYPE_CHECKING:
    from NNDF.graphs.spec import GraphSpec

QUERY_LENGTHS, TOTAL_LENGTHS, LOGIT_POSITIONS = "query_lengths", "total_lengths", "logit_positions"
PAST, PRESENT = "past_key_values", "present"
CAPACITY = "capacity"          # the cache buffers' slot axis


def inplace_axes(n_layers: int) -> tuple[dict[str, dict[int, str]], dict[str, dict[int, str]]]:
    """The contract above for `n_layers` layers: inputs and outputs with their dynamic axes, in order
    (kinds/decoder_only/graphs.py makes its GraphSpec)."""
    cache = {0: BATCH, 2: CAPACITY}
    inputs = {"input_ids": {0: BATCH, 1: SEQ}, QUERY_LENGTHS: {0: BATCH}, TOTAL_LENGTHS: {0: BATCH},
              LOGIT_POSITIONS: {0: BATCH, 1: KEPT}}
    inputs.update({name: dict(cache) for name in kv_names(PAST, n_layers)})
    outputs = {"logits": {0: BATCH, 1: KEPT}}
    outputs.update({name: dict(cache) for name in kv_names(PRESENT, n_layers)})
    return inputs, outputs


def is_inplace(spec: GraphSpec) -> bool:
    return QUERY_LENGTHS in spec.inputs
