"""LLAMA on ONNX Runtime, with or without the KV cache."""

from functools import partial

from NNDF.api import Model
from NNDF.decoder_only_backends import onnxrt_backend

from LLAMA.LLAMAModelConfig import LLAMAModelConfig

make_backend = partial(onnxrt_backend, LLAMAModelConfig)


class LLAMAOnnxRT(Model, family="LLAMA", backend="onnxrt"):
    """Llama-style models on ONNX Runtime, for scripts and notebooks
    (keyword arguments are run.py's flags; see NNDF.api)."""
