"""An encoder-decoder family (T5, BART): a ModelFamily whose models are AutoModelForSeq2SeqLM and
whose backends are this kind's (backends.py)."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import AutoModelForSeq2SeqLM

from NNDF.models.family import ModelFamily


@dataclass(kw_only=True)   # its defaults may then follow ModelFamily's required fields
class Seq2SeqFamily(ModelFamily):
    model_class: type = AutoModelForSeq2SeqLM
    kind = "encoder_decoder"
