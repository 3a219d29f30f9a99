"""BART on ONNX Runtime."""

import Seq2Seq.onnxrt

from BART.BARTModelConfig import BARTModelConfig


def make_backend(loaded, cfg, workdir):
    return Seq2Seq.onnxrt.make_backend(BARTModelConfig, loaded, cfg, workdir)
