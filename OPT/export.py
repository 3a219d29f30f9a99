"""OPT graphs: the decoder with and without KV cache, on the shared decoder-only exporter."""

from NNDF.decoder_only import decoder_spec
from NNDF.family import LoadedModel
from NNDF.onnx_export import GraphSpec

from OPT.OPTModelConfig import OPTModelConfig


def decoder_graph(loaded: LoadedModel, use_cache: bool) -> GraphSpec:
    return decoder_spec(loaded.model, OPTModelConfig.layout(loaded), with_cache=use_cache)
