"""LLAMA on PyTorch (HuggingFace generate): the reference backend."""

from NNDF.decoder_only_backends import frameworks_backend


def make_backend(loaded, cfg, workdir):
    return frameworks_backend(loaded, cfg)
