"""BLIP on PyTorch (HF generate)."""

import Vision2Seq.frameworks

from BLIP.BLIPModelConfig import BLIPModelConfig


def make_backend(loaded, cfg, workdir):
    return Vision2Seq.frameworks.make_backend(BLIPModelConfig, loaded, cfg, workdir)
