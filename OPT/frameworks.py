"""OPT on PyTorch (HuggingFace generate, the reference): made by NNDF/decoder_only_family.py."""
from NNDF.api import Model
from OPT.OPTModelConfig import OPT_FAMILY

make_backend = OPT_FAMILY.frameworks


class OPTHF(Model, family="OPT", backend="frameworks"):
    """OPT on PyTorch (HuggingFace generate, the reference). Keyword arguments are run.py's flags (NNDF.api)."""
