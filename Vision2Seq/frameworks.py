"""Image-to-text models on PyTorch (the model's own HF generate), under the demo's file name."""

from NNDF.kinds.image_to_text.backends import frameworks as make_backend

__all__ = ["make_backend"]
