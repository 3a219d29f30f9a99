"""GPT2 on TensorRT: made by NNDF/kinds/decoder_only/backends.py."""
from NNDF.api import Model
from NNDF.kinds.makers import backend_maker
from GPT2.GPT2ModelConfig import GPT2_FAMILY

make_backend = backend_maker(GPT2_FAMILY, "trt")


class GPT2TRT(Model, family="GPT2", backend="trt"):
    """GPT2 (and GPT-Neo, GPT-J, GPT-NeoX, Cerebras-GPT) on TensorRT. Keyword arguments are run.py's flags
    (NNDF.api)."""
