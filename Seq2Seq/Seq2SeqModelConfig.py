"""The original demo's shared encoder-decoder base: the family class, which lives with its kind in
NNDF/kinds/encoder_decoder/ (as every model kind does); this file keeps the demo's import path."""

from NNDF.kinds.encoder_decoder.family import Seq2SeqFamily

__all__ = ["Seq2SeqFamily"]
