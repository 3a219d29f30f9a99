"""BERT / DistilBERT on TensorRT: an engine from the plain export (int8: calibrated QDQ)."""

from NNDF.encoder_only import trt_backend

from BERT.BERTModelConfig import BERTModelConfig


def make_backend(loaded, cfg, workdir):
    return trt_backend(BERTModelConfig, loaded, cfg, workdir)
