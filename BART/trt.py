"""BART on TensorRT."""

import Seq2Seq.trt

from BART.BARTModelConfig import BARTModelConfig


def make_backend(loaded, cfg, workdir):
    return Seq2Seq.trt.make_backend(BARTModelConfig, loaded, cfg, workdir)
