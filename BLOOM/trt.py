"""BLOOM on TensorRT: engines built from the same ONNX graphs onnxrt runs."""

from NNDF.api import Model
from NNDF.decoder_only_backends import trt_backend

from BLOOM.BLOOMModelConfig import BLOOMModelConfig


def make_backend(loaded, cfg, workdir):
    return trt_backend(BLOOMModelConfig, loaded, cfg, workdir)


class BLOOMTRT(Model, family="BLOOM", backend="trt"):
    """BLOOM on TensorRT; the Python API for scripts and notebooks (NNDF.api)."""
