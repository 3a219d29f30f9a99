"""Image-to-text models on TensorRT, under the demo's file name."""

from NNDF.kinds.image_to_text.backends import trt as make_backend

__all__ = ["make_backend"]
