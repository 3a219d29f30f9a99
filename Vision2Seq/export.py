"""The graphs of an image-to-text model (NNDF/kinds/image_to_text/), under the demo's file name."""

from NNDF.kinds.image_to_text.graphs import Vision2SeqLayout, graph_specs, specs_for

__all__ = ["Vision2SeqLayout", "graph_specs", "specs_for"]
