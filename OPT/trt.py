"""OPT on TensorRT: engines built from the same ONNX graphs onnxrt runs."""

from NNDF.api import Model
from NNDF.decoder_only_backends import trt_backend

from OPT.OPTModelConfig import OPTModelConfig


def make_backend(loaded, cfg, workdir):
    return trt_backend(OPTModelConfig, loaded, cfg, workdir)


class OPTTRT(Model, family="OPT", backend="trt"):
    """OPT on TensorRT; the Python API for scripts and notebooks (NNDF.api)."""
