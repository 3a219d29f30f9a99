"""GPT2 on TensorRT: engines built from the same ONNX graphs onnxrt runs."""

from NNDF.api import Model
from NNDF.decoder_only_backends import trt_backend

from GPT2.GPT2ModelConfig import GPT2ModelConfig


def make_backend(loaded, cfg, workdir):
    return trt_backend(GPT2ModelConfig, loaded, cfg, workdir)


class GPT2TRT(Model, family="GPT2", backend="trt"):
    """GPT2 (and GPT-Neo, GPT-J, GPT-NeoX, Cerebras-GPT) on TensorRT, for scripts and notebooks
    (keyword arguments are run.py's flags; see NNDF.api)."""
