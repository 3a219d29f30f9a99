"""BERT's one graph: the encoder with the checkpoint's head, dynamic batch and sequence, on the shared encoder exporter."""

from BERT.BERTModelConfig import BERT_FAMILY

encoder_graph = BERT_FAMILY.encoder_graph
