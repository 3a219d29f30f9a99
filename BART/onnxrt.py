"""BART on ONNX Runtime: made by Seq2Seq/onnxrt.py."""
from NNDF.api import Model
from BART.BARTModelConfig import BART_FAMILY

make_backend = BART_FAMILY.onnxrt


class BARTOnnxRT(Model, family="BART", backend="onnxrt"):
    """BART and mBART on ONNX Runtime. Keyword arguments are run.py's flags (NNDF.api)."""
