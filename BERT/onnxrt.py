"""BERT / DistilBERT on ONNX Runtime: the plain export under ONNX Runtime's session optimizations; int8 is
dynamic quantization of its "bert"-fused graph (Attention -> QAttention)."""

from NNDF.api import Model
from NNDF.kinds.makers import backend_maker

from BERT.BERTModelConfig import BERT_FAMILY

make_backend = backend_maker(BERT_FAMILY, "onnxrt")


class BERTOnnxRT(Model, family="BERT", backend="onnxrt"):
    """BERT / DistilBERT on ONNX Runtime, for scripts and notebooks: `predict(input="What a great book .")` gives the answer
    (keyword arguments are run.py's flags; see NNDF.api)."""
