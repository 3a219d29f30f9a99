"""T5 on ONNX Runtime."""

import Seq2Seq.onnxrt

from T5.T5ModelConfig import T5ModelConfig


def make_backend(loaded, cfg, workdir):
    return Seq2Seq.onnxrt.make_backend(T5ModelConfig, loaded, cfg, workdir)
