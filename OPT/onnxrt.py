"""OPT on ONNX Runtime, made by the shared decoder-only code (NNDF/decoder_only_family.py)."""
from NNDF.api import Model
from OPT.OPTModelConfig import OPT_FAMILY

make_backend = OPT_FAMILY.onnxrt


class OPTOnnxRT(Model, family="OPT", backend="onnxrt"):
    """OPT on ONNX Runtime; keyword arguments are run.py's flags (NNDF.api)."""
