"""BLIP on TensorRT: made by NNDF/kinds/image_to_text/backends.py."""
from NNDF.api import Model
from NNDF.kinds.makers import backend_maker
from BLIP.BLIPModelConfig import BLIP_FAMILY

make_backend = backend_maker(BLIP_FAMILY, "trt")


class BLIPTRT(Model, family="BLIP", backend="trt"):
    """BLIP on TensorRT. Keyword arguments are run.py's flags (NNDF.api).
    A prompt is `IMAGE` or `IMAGE | caption prefix`."""
