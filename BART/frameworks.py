"""BART on PyTorch."""

from Seq2Seq.frameworks import make_backend  # noqa: F401  (BART needs nothing of its own here)
