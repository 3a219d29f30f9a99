"""LLAMA on TensorRT: engines built from the same ONNX graphs onnxrt runs."""

from functools import partial

from NNDF.decoder_only_backends import trt_backend

from LLAMA.LLAMAModelConfig import LLAMAModelConfig

make_backend = partial(trt_backend, LLAMAModelConfig)
