"""T5 on TensorRT: made by Seq2Seq/trt.py."""
from NNDF.api import Model
from T5.T5ModelConfig import T5_FAMILY

make_backend = T5_FAMILY.trt


class T5TRT(Model, family="T5", backend="trt"):
    """T5 and Flan-T5 on TensorRT. Keyword arguments are run.py's flags (NNDF.api)."""
