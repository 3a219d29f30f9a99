"""GPT2 graphs: the decoder with and without KV cache, on the shared decoder-only exporter."""

from NNDF.decoder_only import decoder_spec
from NNDF.onnx_export import GraphSpec

from GPT2.GPT2ModelConfig import GPT2_LAYOUT


def decoder_graph(model, use_cache: bool) -> GraphSpec:
    return decoder_spec(model, GPT2_LAYOUT, with_cache=use_cache)
