"""Encoder-decoder models on PyTorch (HuggingFace generate), under the demo's file name."""

from NNDF.kinds.encoder_decoder.backends import frameworks as make_backend

__all__ = ["make_backend"]
