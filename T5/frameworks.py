"""T5 on PyTorch."""

from NNDF.api import Model
from Seq2Seq.frameworks import make_backend  # noqa: F401  (T5 needs nothing of its own here)


class T5HF(Model, family="T5", backend="frameworks"):
    """T5 and Flan-T5 on PyTorch (HuggingFace generate); the Python API for scripts and notebooks (NNDF.api)."""
