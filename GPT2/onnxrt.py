"""GPT2 on ONNX Runtime, with or without the KV cache."""

from NNDF.api import Model
from NNDF.decoder_only_backends import onnxrt_backend

from GPT2.GPT2ModelConfig import GPT2ModelConfig


def make_backend(loaded, cfg, workdir):
    return onnxrt_backend(GPT2ModelConfig, loaded, cfg, workdir)


class GPT2OnnxRT(Model, family="GPT2", backend="onnxrt"):
    """GPT2 (and GPT-Neo, GPT-J, GPT-NeoX, Cerebras-GPT) on ONNX Runtime, for scripts and notebooks
    (keyword arguments are run.py's flags; see NNDF.api)."""
