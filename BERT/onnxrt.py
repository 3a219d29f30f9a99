"""BERT / DistilBERT on ONNX Runtime, with its "bert" transformer fusions (int8: dynamic quantization)."""

from NNDF.encoder_only import onnxrt_backend

from BERT.BERTModelConfig import BERTModelConfig


def make_backend(loaded, cfg, workdir):
    return onnxrt_backend(BERTModelConfig, loaded, cfg, workdir)
