"""LLAMA graphs: the decoder with and without KV cache, on the shared decoder-only exporter."""

from NNDF.decoder_only import decoder_spec

from LLAMA.LLAMAModelConfig import LLAMAModelConfig


def decoder_graph(loaded, use_cache: bool):
    return decoder_spec(loaded.model, LLAMAModelConfig.layout(loaded), with_cache=use_cache)
