"""OPT on ONNX Runtime, with or without the KV cache."""

from NNDF.api import Model
from NNDF.decoder_only_backends import onnxrt_backend

from OPT.OPTModelConfig import OPTModelConfig


def make_backend(loaded, cfg, workdir):
    return onnxrt_backend(OPTModelConfig, loaded, cfg, workdir)


class OPTOnnxRT(Model, family="OPT", backend="onnxrt"):
    """OPT on ONNX Runtime; the Python API for scripts and notebooks (NNDF.api)."""
