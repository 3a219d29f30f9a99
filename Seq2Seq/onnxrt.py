"""Encoder-decoder models on ONNX Runtime, under the demo's file name."""

from NNDF.kinds.encoder_decoder.backends import onnxrt as make_backend

__all__ = ["make_backend"]
