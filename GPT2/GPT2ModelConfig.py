"""GPT2: variants, the tiny offline model, and what its graphs look like."""

from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from NNDF.decoder_only import DecoderOnlyLayout
from NNDF.family import ModelFamily, Variant
from NNDF.tokenizer import gpt2_style_tokenizer

HUB_VARIANTS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")


def build_tiny(seed: int):
    """Two layers, 64 wide, 512-token vocabulary. Weights are drawn 10x wider than
    GPT2's init so greedy choices have clear winners instead of near-ties."""
    tokenizer = gpt2_style_tokenizer(512)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=64, n_layer=2, n_head=4,
                        initializer_range=0.2, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return GPT2LMHeadModel(config), tokenizer


# GPT2 takes position ids and keeps its cache as (batch, heads, length, head_dim): the defaults.
GPT2_LAYOUT = DecoderOnlyLayout()

GPT2ModelConfig = ModelFamily(
    name="GPT2",
    package="GPT2",
    variants=(Variant("gpt2-tiny", build_tiny=build_tiny),) + tuple(Variant(v, v, f"{v}.json") for v in HUB_VARIANTS),
    model_class=AutoModelForCausalLM,
    fallback_tokenizer=lambda: gpt2_style_tokenizer(512),
    max_positions=lambda config: config.max_position_embeddings,
    layouts={"default": GPT2_LAYOUT},
)
