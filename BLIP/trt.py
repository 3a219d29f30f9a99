"""BLIP on TensorRT: made by Vision2Seq/trt.py."""
from NNDF.api import Model
from BLIP.BLIPModelConfig import BLIP_FAMILY

make_backend = BLIP_FAMILY.trt


class BLIPTRT(Model, family="BLIP", backend="trt"):
    """BLIP on TensorRT. Keyword arguments are run.py's flags (NNDF.api).
    A prompt is `IMAGE` or `IMAGE | caption prefix`."""
