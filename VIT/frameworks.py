"""ViT on PyTorch: the reference backend."""

from NNDF.api import Model
from NNDF.encoder_only import frameworks_backend


def make_backend(loaded, cfg, workdir):
    return frameworks_backend(loaded, cfg)


class VITHF(Model, family="VIT", backend="frameworks"):
    """ViT on PyTorch, for scripts and notebooks: `predict(input="images/circle_0.png")` gives the answer
    (keyword arguments are run.py's flags; see NNDF.api)."""
