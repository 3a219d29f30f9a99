"""VIT's one graph: the encoder with the checkpoint's head, dynamic batch, on the shared encoder exporter."""

from NNDF.encoder_only import EncoderModel, encoder_spec
from NNDF.onnx_export import GraphSpec


def encoder_graph(loaded: EncoderModel) -> GraphSpec:
    return encoder_spec(loaded)
