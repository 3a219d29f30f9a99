"""GPT2 on ONNX Runtime: made by NNDF/kinds/decoder_only/backends.py."""
from NNDF.api import Model
from NNDF.kinds.makers import backend_maker
from GPT2.GPT2ModelConfig import GPT2_FAMILY

make_backend = backend_maker(GPT2_FAMILY, "onnxrt")


class GPT2OnnxRT(Model, family="GPT2", backend="onnxrt"):
    """GPT2 (and GPT-Neo, GPT-J, GPT-NeoX, Cerebras-GPT) on ONNX Runtime. Keyword arguments are run.py's flags
    (NNDF.api)."""
