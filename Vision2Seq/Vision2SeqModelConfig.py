"""The image-to-text family class and its loaded model, which live with their kind in
NNDF/kinds/image_to_text/ (as every model kind does); this file keeps the demo-style import path."""

from NNDF.kinds.image_to_text.family import Vision2SeqFamily
from NNDF.kinds.image_to_text.model import ImagePrompts, ImageTextModel

__all__ = ["ImagePrompts", "ImageTextModel", "Vision2SeqFamily"]
