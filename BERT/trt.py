"""BERT / DistilBERT on TensorRT: an engine from the plain export (int8: calibrated QDQ)."""

from NNDF.api import Model
from NNDF.encoder_only import trt_backend

from BERT.BERTModelConfig import BERTModelConfig


def make_backend(loaded, cfg, workdir):
    return trt_backend(BERTModelConfig, loaded, cfg, workdir)


class BERTTRT(Model, family="BERT", backend="trt"):
    """BERT / DistilBERT on TensorRT, for scripts and notebooks: `predict(input="What a great book .")` gives the answer
    (keyword arguments are run.py's flags; see NNDF.api)."""
