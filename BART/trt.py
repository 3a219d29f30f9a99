"""BART on TensorRT: made by NNDF/kinds/encoder_decoder/backends.py."""
from NNDF.api import Model
from NNDF.kinds.makers import backend_maker
from BART.BARTModelConfig import BART_FAMILY

make_backend = backend_maker(BART_FAMILY, "trt")


class BARTTRT(Model, family="BART", backend="trt"):
    """BART and mBART on TensorRT. Keyword arguments are run.py's flags (NNDF.api)."""
