"""BART on ONNX Runtime."""

from NNDF.api import Model
import Seq2Seq.onnxrt

from BART.BARTModelConfig import BART_FAMILY


def make_backend(loaded, cfg, workdir):
    return Seq2Seq.onnxrt.make_backend(BART_FAMILY, loaded, cfg, workdir)


class BARTOnnxRT(Model, family="BART", backend="onnxrt"):
    """BART and mBART on ONNX Runtime; the Python API for scripts and notebooks (NNDF.api)."""
