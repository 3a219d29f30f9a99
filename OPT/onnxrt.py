"""OPT on ONNX Runtime: made by NNDF/decoder_only_family.py."""
from NNDF.api import Model
from OPT.OPTModelConfig import OPT_FAMILY

make_backend = OPT_FAMILY.onnxrt


class OPTOnnxRT(Model, family="OPT", backend="onnxrt"):
    """OPT on ONNX Runtime. Keyword arguments are run.py's flags (NNDF.api)."""
