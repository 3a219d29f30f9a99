"""BART on TensorRT."""

from NNDF.api import Model
import Seq2Seq.trt

from BART.BARTModelConfig import BART_FAMILY


def make_backend(loaded, cfg, workdir):
    return Seq2Seq.trt.make_backend(BART_FAMILY, loaded, cfg, workdir)


class BARTTRT(Model, family="BART", backend="trt"):
    """BART and mBART on TensorRT; the Python API for scripts and notebooks (NNDF.api)."""
