"""LLAMA on ONNX Runtime: made by NNDF/kinds/decoder_only/backends.py."""
from NNDF.api import Model
from NNDF.kinds.makers import backend_maker
from LLAMA.LLAMAModelConfig import LLAMA_FAMILY

make_backend = backend_maker(LLAMA_FAMILY, "onnxrt")


class LLAMAOnnxRT(Model, family="LLAMA", backend="onnxrt"):
    """Llama-style models (Llama, Mistral, Qwen2) on ONNX Runtime. Keyword arguments are run.py's flags (NNDF.api)."""
