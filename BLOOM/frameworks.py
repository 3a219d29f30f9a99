"""BLOOM on PyTorch (HuggingFace generate, the reference): made by NNDF/decoder_only_family.py."""
from NNDF.api import Model
from BLOOM.BLOOMModelConfig import BLOOM_FAMILY

make_backend = BLOOM_FAMILY.frameworks


class BLOOMHF(Model, family="BLOOM", backend="frameworks"):
    """BLOOM and BLOOMZ on PyTorch (HuggingFace generate, the reference). Keyword arguments are run.py's flags
    (NNDF.api)."""
