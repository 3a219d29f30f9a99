"""OPT on ONNX Runtime: made by NNDF/kinds/decoder_only/backends.py."""
from NNDF.api import Model
from NNDF.kinds.makers import backend_maker
from OPT.OPTModelConfig import OPT_FAMILY

make_backend = backend_maker(OPT_FAMILY, "onnxrt")


class OPTOnnxRT(Model, family="OPT", backend="onnxrt"):
    """OPT on ONNX Runtime. Keyword arguments are run.py's flags (NNDF.api)."""
