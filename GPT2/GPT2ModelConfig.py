"""GPT2 and its close relatives: variants, the tiny offline models, and what their graphs look like.

GPT-Neo, GPT-J, GPT-NeoX and Cerebras-GPT are GPT-style decoders whose graphs differ from GPT2's
only in details a layout declares, so they are variant groups here, each variant naming its
`arch` (HF model_type; Cerebras-GPT *is* GPT2, so "default").
"""

from transformers import (GPT2Config, GPT2LMHeadModel, GPTJConfig, GPTJForCausalLM,
                          GPTNeoConfig, GPTNeoForCausalLM, GPTNeoXConfig, GPTNeoXForCausalLM)

from NNDF.export import gpt2_graph
from NNDF.kinds.decoder_only.family import DecoderOnlyFamily
from NNDF.kinds.decoder_only.graphs import DecoderOnlyLayout
from NNDF.models.family import Variant, hub_variants, tiny_decoder

HUB_VARIANTS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
# hub id -> arch
RELATIVES = {
    **{f"EleutherAI/gpt-neo-{s}": "gpt_neo" for s in ("125m", "1.3B", "2.7B")},
    "EleutherAI/gpt-j-6b": "gptj",
    "EleutherAI/gpt-neox-20b": "gpt_neox",
    **{f"cerebras/Cerebras-GPT-{s}": "default" for s in ("111M", "256M", "590M", "1.3B", "2.7B", "6.7B", "13B")},
}


def build_tiny(seed: int):
    """Two layers, 64 wide, 512-token vocabulary. Weights are drawn 10x wider than
    GPT2's init so greedy choices have clear winners instead of near-ties."""
    return tiny_decoder(GPT2Config, GPT2LMHeadModel, n_positions=128, n_embd=64, n_layer=2, n_head=4,
                        initializer_range=0.2)


def build_tiny_gpt_neo(seed: int):
    """As gpt2-tiny, with one global and one local layer whose window is 8 tokens, so
    verifying at past lengths like 37 checks the window inside the graph."""
    return tiny_decoder(GPTNeoConfig, GPTNeoForCausalLM, max_position_embeddings=128, hidden_size=64, num_layers=2,
                        num_heads=4, attention_types=[[["global", "local"], 1]], window_size=8, initializer_range=0.2)


def build_tiny_gptj(seed: int):
    """As gpt2-tiny, with rotary on 8 of each head's 16 dims (gpt-j-6b rotates 64 of 256)."""
    return tiny_decoder(GPTJConfig, GPTJForCausalLM, n_positions=128, n_embd=64, n_layer=2, n_head=4, rotary_dim=8,
                        initializer_range=0.2)


def build_tiny_gpt_neox(seed: int):
    """As gpt2-tiny, with gpt-neox-20b's partial rotary (a quarter of each head) and parallel residual."""
    return tiny_decoder(GPTNeoXConfig, GPTNeoXForCausalLM, max_position_embeddings=128, hidden_size=64,
                        num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, rotary_pct=0.25,
                        use_parallel_residual=True, initializer_range=0.2)


# GPT2 takes position ids and keeps its cache as (batch, heads, length, head_dim): the defaults.
# onnxrt also applies ONNX Runtime's GPT2 fusions (SkipLayerNorm, FastGelu): ~4% per decode step here.
# With the KV cache on ONNX Runtime's CPU provider, onnxrt's decoder is instead written from the weights
# with the cache in place (NNDF/export/gpt2_graph.py); the relatives keep the traced graph.
GPT2_LAYOUT = DecoderOnlyLayout(ort_fusions="gpt2", onnxrt_from_weights=gpt2_graph.WRITER)
# The relatives share that boundary. transformers 5.23 gives GPT-Neo's local layers no
# sliding-window cache (its config has no `sliding_window`): the cache keeps every position and
# the window is the model's own mask, traced into the graph. HF computes their attention softmax
# in fp32 under fp16, so an fp16 graph keeps it there too. (Cerebras-GPT needs no tiny model of
# its own: it is GPT2 with exact GELU, so gpt2-tiny exercises its graph.)
RELATIVE_LAYOUT = DecoderOnlyLayout(fp16_keep_fp32_ops=("Softmax",))

GPT2_FAMILY = DecoderOnlyFamily(
    name="GPT2",
    package="GPT2",
    variants=(
        Variant("gpt2-tiny", build_tiny=build_tiny),  # first: the family default
        *hub_variants(HUB_VARIANTS),
        Variant("gpt-neo-tiny", arch="gpt_neo", build_tiny=build_tiny_gpt_neo),
        Variant("gptj-tiny", arch="gptj", build_tiny=build_tiny_gptj),
        Variant("gpt-neox-tiny", arch="gpt_neox", build_tiny=build_tiny_gpt_neox),
        *hub_variants(RELATIVES),
    ),
    layouts={"default": GPT2_LAYOUT, "gpt_neo": RELATIVE_LAYOUT, "gptj": RELATIVE_LAYOUT, "gpt_neox": RELATIVE_LAYOUT},
    model_types=("gpt2", "gpt_neo", "gptj", "gpt_neox"),
)
