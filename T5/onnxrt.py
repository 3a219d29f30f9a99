"""T5 on ONNX Runtime."""

from NNDF.api import Model
import Seq2Seq.onnxrt

from T5.T5ModelConfig import T5_FAMILY


def make_backend(loaded, cfg, workdir):
    return Seq2Seq.onnxrt.make_backend(T5_FAMILY, loaded, cfg, workdir)


class T5OnnxRT(Model, family="T5", backend="onnxrt"):
    """T5 and Flan-T5 on ONNX Runtime; the Python API for scripts and notebooks (NNDF.api)."""
