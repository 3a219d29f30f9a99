"""LLAMA on TensorRT: made by NNDF/decoder_only_family.py."""
from NNDF.api import Model
from LLAMA.LLAMAModelConfig import LLAMA_FAMILY

make_backend = LLAMA_FAMILY.trt


class LLAMATRT(Model, family="LLAMA", backend="trt"):
    """Llama-style models (Llama, Mistral, Qwen2) on TensorRT. Keyword arguments are run.py's flags (NNDF.api)."""
