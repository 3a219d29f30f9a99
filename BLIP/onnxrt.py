"""BLIP on ONNX Runtime."""

import Vision2Seq.onnxrt

from BLIP.BLIPModelConfig import BLIPModelConfig


def make_backend(loaded, cfg, workdir):
    return Vision2Seq.onnxrt.make_backend(BLIPModelConfig, loaded, cfg, workdir)
