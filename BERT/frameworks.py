"""BERT / DistilBERT on PyTorch: the reference backend."""

from NNDF.api import Model
from NNDF.kinds.makers import backend_maker

from BERT.BERTModelConfig import BERT_FAMILY

make_backend = backend_maker(BERT_FAMILY, "frameworks")


class BERTHF(Model, family="BERT", backend="frameworks"):
    """BERT / DistilBERT on PyTorch, for scripts and notebooks: `predict(input="What a great book .")` gives the answer
    (keyword arguments are run.py's flags; see NNDF.api)."""
