"""GPT2 on ONNX Runtime, with or without the KV cache."""

from NNDF.decoder_only_backends import onnxrt_backend

from GPT2.GPT2ModelConfig import GPT2ModelConfig


def make_backend(loaded, cfg, workdir):
    return onnxrt_backend(GPT2ModelConfig, loaded, cfg, workdir)
