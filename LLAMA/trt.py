"""LLAMA on TensorRT: engines built from the same ONNX graphs onnxrt runs."""

from functools import partial

from NNDF.api import Model
from NNDF.decoder_only_backends import trt_backend

from LLAMA.LLAMAModelConfig import LLAMAModelConfig

make_backend = partial(trt_backend, LLAMAModelConfig)


class LLAMATRT(Model, family="LLAMA", backend="trt"):
    """Llama-style models on TensorRT, for scripts and notebooks
    (keyword arguments are run.py's flags; see NNDF.api)."""
