"""BLIP on TensorRT."""

import Vision2Seq.trt

from BLIP.BLIPModelConfig import BLIPModelConfig


def make_backend(loaded, cfg, workdir):
    return Vision2Seq.trt.make_backend(BLIPModelConfig, loaded, cfg, workdir)
