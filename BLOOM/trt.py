"""BLOOM on TensorRT: made by NNDF/kinds/decoder_only/backends.py."""
from NNDF.api import Model
from NNDF.kinds.makers import backend_maker
from BLOOM.BLOOMModelConfig import BLOOM_FAMILY

make_backend = backend_maker(BLOOM_FAMILY, "trt")


class BLOOMTRT(Model, family="BLOOM", backend="trt"):
    """BLOOM and BLOOMZ on TensorRT. Keyword arguments are run.py's flags (NNDF.api)."""
