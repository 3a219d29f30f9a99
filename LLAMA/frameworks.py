"""LLAMA on PyTorch (HuggingFace generate, the reference): made by NNDF/kinds/decoder_only/backends.py."""
from NNDF.api import Model
from NNDF.kinds.makers import backend_maker
from LLAMA.LLAMAModelConfig import LLAMA_FAMILY

make_backend = backend_maker(LLAMA_FAMILY, "frameworks")


class LLAMAHF(Model, family="LLAMA", backend="frameworks"):
    """Llama-style models (Llama, Mistral, Qwen2) on PyTorch (HuggingFace generate, the reference). Keyword
    arguments are run.py's flags (NNDF.api)."""
