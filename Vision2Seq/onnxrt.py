"""Image-to-text models on ONNX Runtime, under the demo's file name."""

from NNDF.kinds.image_to_text.backends import onnxrt as make_backend

__all__ = ["make_backend"]
