"""BLIP on ONNX Runtime: made by Vision2Seq/onnxrt.py."""
from NNDF.api import Model
from BLIP.BLIPModelConfig import BLIP_FAMILY

make_backend = BLIP_FAMILY.onnxrt


class BLIPOnnxRT(Model, family="BLIP", backend="onnxrt"):
    """BLIP on ONNX Runtime. Keyword arguments are run.py's flags (NNDF.api).
    A prompt is `IMAGE` or `IMAGE | caption prefix`."""
