"""BART and mBART: variants and tiny offline models. Their graphs need nothing beyond Seq2Seq's."""

from transformers import BartConfig, BartForConditionalGeneration, MBartConfig, MBartForConditionalGeneration

from NNDF.kinds.encoder_decoder.graphs import Seq2SeqLayout
from NNDF.models.family import Variant
from NNDF.models.tiny_training import trained_tiny
from NNDF.models.tokenizers import bart_style_tokenizer

from NNDF.kinds.encoder_decoder.family import Seq2SeqFamily

HUB_VARIANTS = ("facebook/bart-base", "facebook/bart-large", "facebook/bart-large-cnn", "facebook/mbart-large-50")


def _tiny(seed: int, mbart: bool):
    """Two layers each side, 64 wide, briefly trained on the shipped pairs so it answers
    instead of repeating one token. mbart-tiny covers mBART's pre-norm layers, scaled
    embeddings and final layer norms."""
    name = "mbart-tiny" if mbart else "bart-tiny"
    return trained_tiny(name, seed, lambda: _random_tiny(mbart), steps=200, lr=3e-3)


def _random_tiny(mbart: bool):
    tok = bart_style_tokenizer(512)
    config_class, model_class = (MBartConfig, MBartForConditionalGeneration) if mbart else (BartConfig, BartForConditionalGeneration)
    config = config_class(vocab_size=len(tok), d_model=64, encoder_layers=2, decoder_layers=2,
                          encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                          decoder_ffn_dim=128, max_position_embeddings=128,
                          scale_embedding=mbart, bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id,
                          eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.eos_token_id,
                          forced_eos_token_id=None)
    return model_class(config), tok


BART_FAMILY = Seq2SeqFamily(
    name="BART", package="BART",
    variants=(Variant("bart-tiny", build_tiny=lambda s: _tiny(s, False)),
              Variant("mbart-tiny", build_tiny=lambda s: _tiny(s, True)))
    + tuple(Variant(v.split("/")[-1], v, f"{v.split('/')[-1]}.json") for v in HUB_VARIANTS),
    fallback_tokenizer=lambda: bart_style_tokenizer(512),
    max_positions=lambda config: config.max_position_embeddings,
    layouts={"default": Seq2SeqLayout()},
    model_types=("bart", "mbart"),
)
