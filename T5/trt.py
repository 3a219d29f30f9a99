"""T5 on TensorRT."""

import Seq2Seq.trt

from T5.T5ModelConfig import T5ModelConfig


def make_backend(loaded, cfg, workdir):
    return Seq2Seq.trt.make_backend(T5ModelConfig, loaded, cfg, workdir)
