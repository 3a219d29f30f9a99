"""Encoder-decoder models (T5, BART): the demo's names for NNDF/kinds/encoder_decoder/."""
