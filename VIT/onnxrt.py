"""ViT on ONNX Runtime, with its "vit" transformer fusions (int8: dynamic quantization)."""

from NNDF.encoder_only import onnxrt_backend

from VIT.VITModelConfig import VITModelConfig


def make_backend(loaded, cfg, workdir):
    return onnxrt_backend(VITModelConfig, loaded, cfg, workdir)
