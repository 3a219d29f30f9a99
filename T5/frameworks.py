"""T5 on PyTorch (HuggingFace generate, the reference): made by NNDF/kinds/encoder_decoder/backends.py."""
from NNDF.api import Model
from NNDF.kinds.makers import backend_maker
from T5.T5ModelConfig import T5_FAMILY

make_backend = backend_maker(T5_FAMILY, "frameworks")


class T5HF(Model, family="T5", backend="frameworks"):
    """T5 and Flan-T5 on PyTorch (HuggingFace generate, the reference). Keyword arguments are run.py's flags
    (NNDF.api)."""
