"""OPT on ONNX Runtime, with or without the KV cache."""

from NNDF.decoder_only_backends import onnxrt_backend

from OPT.OPTModelConfig import OPTModelConfig


def make_backend(loaded, cfg, workdir):
    return onnxrt_backend(OPTModelConfig, loaded, cfg, workdir)
