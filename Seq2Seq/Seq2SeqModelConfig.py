"""What T5 and BART (and BLIP's text side) share at the family level."""

from transformers import AutoModelForSeq2SeqLM

from NNDF.encoder_decoder import Seq2SeqLayout
from NNDF.family import ModelFamily, Variant


def seq2seq_family(name: str, package: str, variants: tuple[Variant, ...], fallback_tokenizer, max_positions,
                   layouts: dict[str, Seq2SeqLayout], model_class=AutoModelForSeq2SeqLM,
                   model_types: tuple[str, ...] = ()) -> ModelFamily:
    return ModelFamily(name=name, package=package, variants=variants, model_class=model_class,
                       fallback_tokenizer=fallback_tokenizer, max_positions=max_positions, layouts=layouts,
                       is_encoder_decoder=True, model_types=model_types)


def decoder_start_id(loaded) -> int:
    start = loaded.generation_defaults["decoder_start_token_id"]
    if start is None:
        raise ValueError(f"{loaded.variant} has no decoder_start_token_id in its config")
    return start
