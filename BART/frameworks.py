"""BART on PyTorch (HuggingFace generate, the reference): made by NNDF/kinds/encoder_decoder/backends.py."""
from NNDF.api import Model
from NNDF.kinds.makers import backend_maker
from BART.BARTModelConfig import BART_FAMILY

make_backend = backend_maker(BART_FAMILY, "frameworks")


class BARTHF(Model, family="BART", backend="frameworks"):
    """BART and mBART on PyTorch (HuggingFace generate, the reference). Keyword arguments are run.py's flags
    (NNDF.api)."""
