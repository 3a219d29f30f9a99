"""Image-to-text models on PyTorch (the model's own HF generate): the reference."""

from NNDF.pipeline import token_ids
from NNDF.torch_placement import framework_placement

from Vision2Seq.backends import TorchVision2Seq


def make_backend(family, loaded, cfg, workdir=None):
    return TorchVision2Seq(loaded.model, family.layout(loaded), token_ids(loaded), framework_placement(cfg.cpu, cfg.fp16))
