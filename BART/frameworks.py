"""BART on PyTorch."""

from NNDF.api import Model
from Seq2Seq.frameworks import make_backend  # noqa: F401  (BART needs nothing of its own here)


class BARTHF(Model, family="BART", backend="frameworks"):
    """BART and mBART on PyTorch (HuggingFace generate); the Python API for scripts and notebooks (NNDF.api)."""
