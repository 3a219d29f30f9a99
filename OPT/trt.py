"""OPT on TensorRT: made by NNDF/kinds/decoder_only/backends.py."""
from NNDF.api import Model
from NNDF.kinds.makers import backend_maker
from OPT.OPTModelConfig import OPT_FAMILY

make_backend = backend_maker(OPT_FAMILY, "trt")


class OPTTRT(Model, family="OPT", backend="trt"):
    """OPT on TensorRT. Keyword arguments are run.py's flags (NNDF.api)."""
