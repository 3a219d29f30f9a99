"""BART on PyTorch (HuggingFace generate, the reference): made by Seq2Seq/frameworks.py."""
from NNDF.api import Model
from BART.BARTModelConfig import BART_FAMILY

make_backend = BART_FAMILY.frameworks


class BARTHF(Model, family="BART", backend="frameworks"):
    """BART and mBART on PyTorch (HuggingFace generate, the reference). Keyword arguments are run.py's flags
    (NNDF.api)."""
