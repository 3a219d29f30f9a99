"""GPT2 on PyTorch (HuggingFace generate, the reference): made by NNDF/kinds/decoder_only/backends.py."""
from NNDF.api import Model
from NNDF.kinds.makers import backend_maker
from GPT2.GPT2ModelConfig import GPT2_FAMILY

make_backend = backend_maker(GPT2_FAMILY, "frameworks")


class GPT2HF(Model, family="GPT2", backend="frameworks"):
    """GPT2 (and GPT-Neo, GPT-J, GPT-NeoX, Cerebras-GPT) on PyTorch (HuggingFace generate, the reference). Keyword
    arguments are run.py's flags (NNDF.api)."""
