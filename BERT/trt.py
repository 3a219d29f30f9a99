"""BERT / DistilBERT on TensorRT: an engine from the plain export (int8: calibrated QDQ)."""

from NNDF.api import Model
from NNDF.kinds.makers import backend_maker

from BERT.BERTModelConfig import BERT_FAMILY

make_backend = backend_maker(BERT_FAMILY, "trt")


class BERTTRT(Model, family="BERT", backend="trt"):
    """BERT / DistilBERT on TensorRT, for scripts and notebooks: `predict(input="What a great book .")` gives the answer
    (keyword arguments are run.py's flags; see NNDF.api)."""
