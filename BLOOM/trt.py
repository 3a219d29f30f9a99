"""BLOOM on TensorRT: made by NNDF/decoder_only_family.py."""
from NNDF.api import Model
from BLOOM.BLOOMModelConfig import BLOOM_FAMILY

make_backend = BLOOM_FAMILY.trt


class BLOOMTRT(Model, family="BLOOM", backend="trt"):
    """BLOOM and BLOOMZ on TensorRT. Keyword arguments are run.py's flags (NNDF.api)."""
