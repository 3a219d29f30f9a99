"""BLOOM on ONNX Runtime: made by NNDF/decoder_only_family.py."""
from NNDF.api import Model
from BLOOM.BLOOMModelConfig import BLOOM_FAMILY

make_backend = BLOOM_FAMILY.onnxrt


class BLOOMOnnxRT(Model, family="BLOOM", backend="onnxrt"):
    """BLOOM and BLOOMZ on ONNX Runtime. Keyword arguments are run.py's flags (NNDF.api)."""
