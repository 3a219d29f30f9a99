"""VIT's one graph: the encoder with the checkpoint's head, dynamic batch, on the shared encoder exporter."""

from VIT.VITModelConfig import VIT_FAMILY

encoder_graph = VIT_FAMILY.encoder_graph
