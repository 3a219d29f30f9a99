"""BLIP on ONNX Runtime."""

from NNDF.api import Model
import Vision2Seq.onnxrt

from BLIP.BLIPModelConfig import BLIP_FAMILY


def make_backend(loaded, cfg, workdir):
    return Vision2Seq.onnxrt.make_backend(BLIP_FAMILY, loaded, cfg, workdir)


class BLIPOnnxRT(Model, family="BLIP", backend="onnxrt"):
    """BLIP on ONNX Runtime, for scripts and notebooks; a prompt is `IMAGE` or `IMAGE | caption prefix`
    (keyword arguments are run.py's flags; see NNDF.api)."""
