"""OPT: variants, the tiny offline model, and what its graphs look like."""

from transformers import OPTConfig, OPTForCausalLM

from NNDF.kinds.decoder_only.family import DecoderOnlyFamily
from NNDF.kinds.decoder_only.graphs import DecoderOnlyLayout
from NNDF.models.family import Variant, hub_variants
from NNDF.models.tokenizers import gpt2_style_tokenizer

HUB_VARIANTS = ("facebook/opt-125m", "facebook/opt-350m", "facebook/opt-1.3b", "facebook/opt-2.7b",
                "facebook/opt-6.7b", "facebook/opt-13b")


def build_tiny(seed: int):
    """Two layers, 64 wide, with opt-350m's two quirks so they are always exported and checked:
    post-layer-norm blocks (do_layer_norm_before=False) and word embeddings narrower than the
    hidden size (projected in and out). Weights drawn wide for clear greedy winners."""
    tokenizer = gpt2_style_tokenizer(512)
    config = OPTConfig(vocab_size=len(tokenizer), max_position_embeddings=128, hidden_size=64, num_hidden_layers=2,
                       num_attention_heads=4, ffn_dim=256, word_embed_proj_dim=32, do_layer_norm_before=False,
                       init_std=0.2, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    return OPTForCausalLM(config), tokenizer


# OPT takes position ids (its learned table is offset by 2 inside the model) and keeps the
# usual (batch, heads, length, head_dim) cache. Its attention softmax runs in fp32 under HF
# fp16, so an fp16 graph keeps it there too.
OPT_LAYOUT = DecoderOnlyLayout(fp16_keep_fp32_ops=("Softmax",))

OPT_FAMILY = DecoderOnlyFamily(
    name="OPT",
    package="OPT",
    variants=(Variant("opt-tiny", build_tiny=build_tiny), *hub_variants(HUB_VARIANTS)),
    layouts={"default": OPT_LAYOUT},
    model_types=("opt",),
)
