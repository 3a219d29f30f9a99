"""LLAMA on ONNX Runtime: made by NNDF/decoder_only_family.py."""
from NNDF.api import Model
from LLAMA.LLAMAModelConfig import LLAMA_FAMILY

make_backend = LLAMA_FAMILY.onnxrt


class LLAMAOnnxRT(Model, family="LLAMA", backend="onnxrt"):
    """Llama-style models (Llama, Mistral, Qwen2) on ONNX Runtime. Keyword arguments are run.py's flags (NNDF.api)."""
