"""BLOOM on TensorRT, made by the shared decoder-only code (NNDF/decoder_only_family.py)."""
from NNDF.api import Model
from BLOOM.BLOOMModelConfig import BLOOM_FAMILY

make_backend = BLOOM_FAMILY.trt


class BLOOMTRT(Model, family="BLOOM", backend="trt"):
    """BLOOM and BLOOMZ on TensorRT; keyword arguments are run.py's flags (NNDF.api)."""
