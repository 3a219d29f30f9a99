"""BLOOM on ONNX Runtime: made by NNDF/kinds/decoder_only/backends.py."""
from NNDF.api import Model
from NNDF.kinds.makers import backend_maker
from BLOOM.BLOOMModelConfig import BLOOM_FAMILY

make_backend = backend_maker(BLOOM_FAMILY, "onnxrt")


class BLOOMOnnxRT(Model, family="BLOOM", backend="onnxrt"):
    """BLOOM and BLOOMZ on ONNX Runtime. Keyword arguments are run.py's flags (NNDF.api)."""
