"""OPT on PyTorch (HuggingFace generate): the reference backend."""

from NNDF.api import Model
from NNDF.decoder_only_backends import frameworks_backend


def make_backend(loaded, cfg, workdir):
    return frameworks_backend(loaded, cfg)


class OPTHF(Model, family="OPT", backend="frameworks"):
    """OPT on PyTorch (HuggingFace generate); the Python API for scripts and notebooks (NNDF.api)."""
