"""The graphs an encoder-decoder run needs (NNDF/kinds/encoder_decoder/), under the demo's file name."""

from NNDF.kinds.encoder_decoder.graphs import specs_for
from NNDF.models.artifacts import graph_paths

__all__ = ["graph_paths", "specs_for"]
