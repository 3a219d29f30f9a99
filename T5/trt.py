"""T5 on TensorRT."""

from NNDF.api import Model
import Seq2Seq.trt

from T5.T5ModelConfig import T5_FAMILY


def make_backend(loaded, cfg, workdir):
    return Seq2Seq.trt.make_backend(T5_FAMILY, loaded, cfg, workdir)


class T5TRT(Model, family="T5", backend="trt"):
    """T5 and Flan-T5 on TensorRT; the Python API for scripts and notebooks (NNDF.api)."""
