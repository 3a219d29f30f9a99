"""ViT on PyTorch: the reference backend."""

from NNDF.encoder_only import frameworks_backend


def make_backend(loaded, cfg, workdir):
    return frameworks_backend(loaded, cfg)
