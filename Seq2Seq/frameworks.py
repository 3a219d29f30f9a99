"""Encoder-decoder models on PyTorch (HuggingFace generate): the reference."""

from NNDF.encoder_decoder import TorchSeq2Seq
from NNDF.pipeline import token_ids
from NNDF.torch_placement import framework_placement

from Seq2Seq.Seq2SeqModelConfig import decoder_start_id


def make_backend(loaded, cfg, workdir):
    return TorchSeq2Seq(loaded.model, token_ids(loaded), decoder_start_id(loaded), framework_placement(cfg.cpu, cfg.fp16))
