"""BLOOM on TensorRT: engines built from the same ONNX graphs onnxrt runs."""

from NNDF.decoder_only_backends import trt_backend

from BLOOM.BLOOMModelConfig import BLOOMModelConfig


def make_backend(loaded, cfg, workdir):
    return trt_backend(BLOOMModelConfig, loaded, cfg, workdir)
