"""T5 and Flan-T5: variants, tiny offline models, and the parts kept fp32 in fp16 graphs."""

from transformers import T5Config, T5ForConditionalGeneration

from NNDF.kinds.encoder_decoder.graphs import Seq2SeqLayout
from NNDF.models.family import Variant
from NNDF.models.tiny_training import trained_tiny
from NNDF.models.tokenizers import t5_style_tokenizer

from NNDF.kinds.encoder_decoder.family import Seq2SeqFamily

T5_VARIANTS = ("t5-small", "t5-base", "t5-large", "t5-3b", "t5-11b")
FLAN_VARIANTS = ("google/flan-t5-small", "google/flan-t5-base", "google/flan-t5-large", "google/flan-t5-xl",
                 "google/flan-t5-xxl")


def _tiny(seed: int, flan: bool):
    """Two layers each side, 64 wide, briefly trained on the shipped pairs so it answers
    instead of repeating one token. Flan's gated-GELU feed-forward and untied head are
    covered by flan-t5-tiny."""
    name = "flan-t5-tiny" if flan else "t5-tiny"
    return trained_tiny(name, seed, lambda: _random_tiny(flan), steps=100, lr=1e-2)


def _random_tiny(flan: bool):
    tok = t5_style_tokenizer(512)
    config = T5Config(vocab_size=len(tok), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2,
                      num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=32,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      decoder_start_token_id=tok.pad_token_id,
                      feed_forward_proj="gated-gelu" if flan else "relu", tie_word_embeddings=not flan)
    return T5ForConditionalGeneration(config), tok


# T5 was trained in bfloat16: its feed-forward outputs and residual stream overflow fp16. The
# final projection of each feed-forward block and the RMS norms stay fp32 in fp16 graphs.
T5_LAYOUT = Seq2SeqLayout(fp16_keep_fp32_ops=("Pow", "ReduceMean", "Sqrt", "Reciprocal"),
                          fp16_keep_fp32_node_patterns=("DenseReluDense/wo",))

T5_FAMILY = Seq2SeqFamily(
    name="T5", package="T5",
    variants=(Variant("t5-tiny", build_tiny=lambda s: _tiny(s, False)),
              Variant("flan-t5-tiny", build_tiny=lambda s: _tiny(s, True)))
    + tuple(Variant(v, v, f"{v.split('/')[-1]}.json") for v in T5_VARIANTS + FLAN_VARIANTS),
    fallback_tokenizer=lambda: t5_style_tokenizer(512),
    max_positions=lambda config: getattr(config, "n_positions", None) or 512,
    layouts={"default": T5_LAYOUT},
    model_types=("t5",),
)
