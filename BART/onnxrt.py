"""BART on ONNX Runtime: made by NNDF/kinds/encoder_decoder/backends.py."""
from NNDF.api import Model
from NNDF.kinds.makers import backend_maker
from BART.BARTModelConfig import BART_FAMILY

make_backend = backend_maker(BART_FAMILY, "onnxrt")


class BARTOnnxRT(Model, family="BART", backend="onnxrt"):
    """BART and mBART on ONNX Runtime. Keyword arguments are run.py's flags (NNDF.api)."""
