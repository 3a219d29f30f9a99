"""LLAMA on PyTorch (HuggingFace generate): the reference backend."""

from NNDF.api import Model
from NNDF.decoder_only_backends import frameworks_backend


def make_backend(loaded, cfg, workdir):
    return frameworks_backend(loaded, cfg)


class LLAMAHF(Model, family="LLAMA", backend="frameworks"):
    """Llama-style models on PyTorch (HuggingFace generate), for scripts and notebooks
    (keyword arguments are run.py's flags; see NNDF.api)."""
