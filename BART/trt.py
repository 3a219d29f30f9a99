"""BART on TensorRT: made by Seq2Seq/trt.py."""
from NNDF.api import Model
from BART.BARTModelConfig import BART_FAMILY

make_backend = BART_FAMILY.trt


class BARTTRT(Model, family="BART", backend="trt"):
    """BART and mBART on TensorRT. Keyword arguments are run.py's flags (NNDF.api)."""
