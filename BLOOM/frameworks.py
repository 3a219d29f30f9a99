"""BLOOM on PyTorch (HuggingFace generate, the reference): made by NNDF/kinds/decoder_only/backends.py."""
from NNDF.api import Model
from NNDF.kinds.makers import backend_maker
from BLOOM.BLOOMModelConfig import BLOOM_FAMILY

make_backend = backend_maker(BLOOM_FAMILY, "frameworks")


class BLOOMHF(Model, family="BLOOM", backend="frameworks"):
    """BLOOM and BLOOMZ on PyTorch (HuggingFace generate, the reference). Keyword arguments are run.py's flags
    (NNDF.api)."""
