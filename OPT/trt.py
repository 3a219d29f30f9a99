"""OPT on TensorRT: made by NNDF/decoder_only_family.py."""
from NNDF.api import Model
from OPT.OPTModelConfig import OPT_FAMILY

make_backend = OPT_FAMILY.trt


class OPTTRT(Model, family="OPT", backend="trt"):
    """OPT on TensorRT. Keyword arguments are run.py's flags (NNDF.api)."""
