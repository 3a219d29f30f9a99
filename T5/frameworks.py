"""T5 on PyTorch."""

from Seq2Seq.frameworks import make_backend  # noqa: F401  (T5 needs nothing of its own here)
