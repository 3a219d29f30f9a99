"""LLAMA on ONNX Runtime, with or without the KV cache."""

from functools import partial

from NNDF.decoder_only_backends import onnxrt_backend

from LLAMA.LLAMAModelConfig import LLAMAModelConfig

make_backend = partial(onnxrt_backend, LLAMAModelConfig)
