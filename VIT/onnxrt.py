"""ViT on ONNX Runtime: the plain export under ONNX Runtime's session optimizations; int8 is
dynamic quantization of its "vit"-fused graph (Attention -> QAttention)."""

from NNDF.api import Model
from NNDF.kinds.makers import backend_maker

from VIT.VITModelConfig import VIT_FAMILY

make_backend = backend_maker(VIT_FAMILY, "onnxrt")


class VITOnnxRT(Model, family="VIT", backend="onnxrt"):
    """ViT on ONNX Runtime, for scripts and notebooks: `predict(input="images/circle_0.png")` gives the answer
    (keyword arguments are run.py's flags; see NNDF.api)."""
