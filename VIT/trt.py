"""ViT on TensorRT: an engine from the plain export (int8: calibrated QDQ)."""

from NNDF.encoder_only import trt_backend

from VIT.VITModelConfig import VITModelConfig


def make_backend(loaded, cfg, workdir):
    return trt_backend(VITModelConfig, loaded, cfg, workdir)
