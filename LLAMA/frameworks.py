"""LLAMA on PyTorch (HuggingFace generate, the reference): made by NNDF/decoder_only_family.py."""
from NNDF.api import Model
from LLAMA.LLAMAModelConfig import LLAMA_FAMILY

make_backend = LLAMA_FAMILY.frameworks


class LLAMAHF(Model, family="LLAMA", backend="frameworks"):
    """Llama-style models (Llama, Mistral, Qwen2) on PyTorch (HuggingFace generate, the reference). Keyword
    arguments are run.py's flags (NNDF.api)."""
