"""ViT on TensorRT: an engine from the plain export (int8: calibrated QDQ)."""

from NNDF.api import Model
from NNDF.encoder_only import trt_backend

from VIT.VITModelConfig import VITModelConfig


def make_backend(loaded, cfg, workdir):
    return trt_backend(VITModelConfig, loaded, cfg, workdir)


class VITTRT(Model, family="VIT", backend="trt"):
    """ViT on TensorRT, for scripts and notebooks: `predict(input="images/circle_0.png")` gives the answer
    (keyword arguments are run.py's flags; see NNDF.api)."""
