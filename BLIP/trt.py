"""BLIP on TensorRT."""

from NNDF.api import Model
import Vision2Seq.trt

from BLIP.BLIPModelConfig import BLIP_FAMILY


def make_backend(loaded, cfg, workdir):
    return Vision2Seq.trt.make_backend(BLIP_FAMILY, loaded, cfg, workdir)


class BLIPTRT(Model, family="BLIP", backend="trt"):
    """BLIP on TensorRT, for scripts and notebooks; a prompt is `IMAGE` or `IMAGE | caption prefix`
    (keyword arguments are run.py's flags; see NNDF.api)."""
