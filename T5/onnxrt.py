"""T5 on ONNX Runtime: made by NNDF/kinds/encoder_decoder/backends.py."""
from NNDF.api import Model
from NNDF.kinds.makers import backend_maker
from T5.T5ModelConfig import T5_FAMILY

make_backend = backend_maker(T5_FAMILY, "onnxrt")


class T5OnnxRT(Model, family="T5", backend="onnxrt"):
    """T5 and Flan-T5 on ONNX Runtime. Keyword arguments are run.py's flags (NNDF.api)."""
