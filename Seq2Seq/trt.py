"""Encoder-decoder models on TensorRT, under the demo's file name."""

from NNDF.kinds.encoder_decoder.backends import trt as make_backend
from NNDF.models.artifacts import prebuilt_engines, trt_sessions

__all__ = ["make_backend", "prebuilt_engines", "trt_sessions"]
