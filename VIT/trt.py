"""ViT on TensorRT: an engine from the plain export (int8: calibrated QDQ)."""

from NNDF.api import Model
from NNDF.kinds.makers import backend_maker

from VIT.VITModelConfig import VIT_FAMILY

make_backend = backend_maker(VIT_FAMILY, "trt")


class VITTRT(Model, family="VIT", backend="trt"):
    """ViT on TensorRT, for scripts and notebooks: `predict(input="images/circle_0.png")` gives the answer
    (keyword arguments are run.py's flags; see NNDF.api)."""
