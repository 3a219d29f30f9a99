"""What T5 and BART (and BLIP's text side) share at the family level."""

from dataclasses import dataclass

from transformers import AutoModelForSeq2SeqLM

import Seq2Seq.frameworks
import Seq2Seq.onnxrt
import Seq2Seq.trt
from NNDF.family import ModelFamily


@dataclass(kw_only=True)   # its defaults may then follow ModelFamily's required fields
class Seq2SeqFamily(ModelFamily):
    """An encoder-decoder family. Its backend makers are Seq2Seq's, `make_backend(family, loaded,
    cfg, workdir)` in frameworks.py, onnxrt.py and trt.py here, so they are this class's methods."""

    model_class: type = AutoModelForSeq2SeqLM

    frameworks = Seq2Seq.frameworks.make_backend
    onnxrt = Seq2Seq.onnxrt.make_backend
    trt = Seq2Seq.trt.make_backend
