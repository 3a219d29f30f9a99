"""BERT / DistilBERT on PyTorch: the reference backend."""

from NNDF.api import Model
from NNDF.encoder_only import frameworks_backend


def make_backend(loaded, cfg, workdir):
    return frameworks_backend(loaded, cfg)


class BERTHF(Model, family="BERT", backend="frameworks"):
    """BERT / DistilBERT on PyTorch, for scripts and notebooks: `predict(input="What a great book .")` gives the answer
    (keyword arguments are run.py's flags; see NNDF.api)."""
