"""BLOOM and BLOOMZ: variants, the tiny offline model, and what their graphs look like."""

from transformers import BloomConfig, BloomForCausalLM

from NNDF.kinds.decoder_only.family import DecoderOnlyFamily
from NNDF.kinds.decoder_only.graphs import DecoderOnlyLayout
from NNDF.models.family import Variant
from NNDF.models.tokenizers import gpt2_style_tokenizer

SIZES = ("560m", "1b1", "1b7", "3b", "7b1")

# BLOOM has no position table (ALiBi biases attention by distance), so nothing in the model caps
# the length; it was trained on 2048-token sequences and that is the limit we enforce.
TRAINED_LENGTH = 2048


def build_tiny(seed: int):
    """Two layers, 64 wide, 512-token vocabulary; weights drawn wide for clear greedy winners."""
    tokenizer = gpt2_style_tokenizer(512)
    config = BloomConfig(vocab_size=len(tokenizer), hidden_size=64, n_layer=2, n_head=4, initializer_range=0.2,
                         seq_length=128, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return BloomForCausalLM(config), tokenizer


# In transformers 5.23 BLOOM's forward takes no position ids: ALiBi is built from the attention
# mask inside the graph. Its cache is the usual (batch, heads, length, head_dim) (the fused
# (batch*heads, head_dim, length) keys of transformers 4.x are gone), so the default axes hold.
# Softmax runs in fp32 under HF fp16, so an fp16 graph keeps it there too.
BLOOM_LAYOUT = DecoderOnlyLayout(uses_position_ids=False, fp16_keep_fp32_ops=("Softmax",))

# BLOOMZ is BLOOM fine-tuned on instructions: the same architecture, so the same config file.
_HUB = [(f"bloom-{s}", f"bigscience/bloom-{s}") for s in SIZES] + [(f"bloomz-{s}", f"bigscience/bloomz-{s}") for s in SIZES]

BLOOM_FAMILY = DecoderOnlyFamily(
    name="BLOOM",
    package="BLOOM",
    variants=(Variant("bloom-tiny", build_tiny=build_tiny),)
    + tuple(Variant(name, hub, f"bloom-{name.split('-')[1]}.json") for name, hub in _HUB),
    max_positions=lambda config: getattr(config, "seq_length", TRAINED_LENGTH),
    layouts={"default": BLOOM_LAYOUT},
    model_types=("bloom",),
)
