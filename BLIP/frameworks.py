"""BLIP on PyTorch (HuggingFace generate, the reference): made by Vision2Seq/frameworks.py."""
from NNDF.api import Model
from BLIP.BLIPModelConfig import BLIP_FAMILY

make_backend = BLIP_FAMILY.frameworks


class BLIPHF(Model, family="BLIP", backend="frameworks"):
    """BLIP on PyTorch (HuggingFace generate, the reference). Keyword arguments are run.py's flags (NNDF.api).
    A prompt is `IMAGE` or `IMAGE | caption prefix`."""
