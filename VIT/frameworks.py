"""ViT on PyTorch: the reference backend."""

from NNDF.api import Model
from NNDF.kinds.makers import backend_maker

from VIT.VITModelConfig import VIT_FAMILY

make_backend = backend_maker(VIT_FAMILY, "frameworks")


class VITHF(Model, family="VIT", backend="frameworks"):
    """ViT on PyTorch, for scripts and notebooks: `predict(input="images/circle_0.png")` gives the answer
    (keyword arguments are run.py's flags; see NNDF.api)."""
