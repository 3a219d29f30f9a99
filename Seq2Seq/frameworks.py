"""Encoder-decoder models on PyTorch (HuggingFace generate): the reference."""

from NNDF.encoder_decoder import TorchSeq2Seq
from NNDF.pipeline import decoder_start_id, token_ids
from NNDF.torch_placement import framework_placement


def make_backend(family, loaded, cfg, workdir=None):
    return TorchSeq2Seq(loaded.model, token_ids(loaded), decoder_start_id(loaded), framework_placement(cfg.cpu, cfg.fp16))
