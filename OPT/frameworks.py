"""OPT on PyTorch (HuggingFace generate, the reference): made by NNDF/kinds/decoder_only/backends.py."""
from NNDF.api import Model
from NNDF.kinds.makers import backend_maker
from OPT.OPTModelConfig import OPT_FAMILY

make_backend = backend_maker(OPT_FAMILY, "frameworks")


class OPTHF(Model, family="OPT", backend="frameworks"):
    """OPT on PyTorch (HuggingFace generate, the reference). Keyword arguments are run.py's flags (NNDF.api)."""
