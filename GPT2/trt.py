"""GPT2 on TensorRT: engines built from the same ONNX graphs onnxrt runs."""

from NNDF.decoder_only_backends import trt_backend

from GPT2.GPT2ModelConfig import GPT2ModelConfig


def make_backend(loaded, cfg, workdir):
    return trt_backend(GPT2ModelConfig, loaded, cfg, workdir)
