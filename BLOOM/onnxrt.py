"""BLOOM on ONNX Runtime, with or without the KV cache."""

from NNDF.api import Model
from NNDF.decoder_only_backends import onnxrt_backend

from BLOOM.BLOOMModelConfig import BLOOMModelConfig


def make_backend(loaded, cfg, workdir):
    return onnxrt_backend(BLOOMModelConfig, loaded, cfg, workdir)


class BLOOMOnnxRT(Model, family="BLOOM", backend="onnxrt"):
    """BLOOM on ONNX Runtime; the Python API for scripts and notebooks (NNDF.api)."""
