"""Llama-style decoders (Llama 2/3, TinyLlama, SmolLM2, Mistral, Qwen2): rotary positions, grouped-query
attention, RMSNorm and SwiGLU. One layout serves the three model types: the KV shape comes from the config."""

import torch
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)

from NNDF.export import llama_graph
from NNDF.kinds.decoder_only.family import DecoderOnlyFamily
from NNDF.kinds.decoder_only.graphs import DecoderOnlyLayout
from NNDF.models.chat_template import with_tiny_template
from NNDF.models.family import Variant, hub_variants, tiny_decoder

HUB = {"meta-llama/Llama-2-7b-hf": "llama", "meta-llama/Llama-3.2-1B": "llama", "TinyLlama/TinyLlama-1.1B-Chat-v1.0": "llama",
       "HuggingFaceTB/SmolLM2-135M": "llama", "HuggingFaceTB/SmolLM2-360M": "llama",
       "mistralai/Mistral-7B-v0.1": "mistral", "Qwen/Qwen2-0.5B": "qwen2", "Qwen/Qwen2.5-1.5B": "qwen2"}
# Two layers, 64 wide; weights drawn wide (std 0.2) so greedy decoding has clear winners. Their tokenizers
# carry a chat template (TinyLlama-Chat's turn markers), so chat and /v1/chat/completions work offline.
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, max_position_embeddings=128, initializer_range=0.2)
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}


def build_tiny_llama(seed: int):
    """Grouped-query attention 4:1 (8 heads, 2 KV heads), untied embeddings, llama3 rope scaling."""
    return with_tiny_template(*tiny_decoder(LlamaConfig, LlamaForCausalLM, num_attention_heads=8, num_key_value_heads=2,
                                            tie_word_embeddings=False, rope_parameters=LLAMA3_ROPE, **TINY))


def build_tiny_qwen2(seed: int):
    """q/k/v projections with biases (drawn non-zero: HF initialises them to zero) and tied embeddings."""
    model, tokenizer = tiny_decoder(Qwen2Config, Qwen2ForCausalLM, num_attention_heads=4, num_key_value_heads=2,
                                    tie_word_embeddings=True, **TINY)
    for name, p in model.named_parameters():
        if name.endswith("_proj.bias"):
            torch.nn.init.normal_(p, std=0.2)
    return with_tiny_template(model, tokenizer)


def build_tiny_mistral(seed: int):
    """Mistral's sliding window, set wider than the 128 positions, so it never takes effect."""
    return with_tiny_template(*tiny_decoder(MistralConfig, MistralForCausalLM, num_attention_heads=4,
                                            num_key_value_heads=2, sliding_window=256, **TINY))


# HF computes RMSNorm's variance, the rotary angles and the attention softmax in fp32 whatever the
# model's dtype; an fp16 graph keeps those nodes (named by their module paths) in fp32 too. ONNX
# Runtime's GPT2 pass fuses RMSNorm with its residual add (SkipSimplifiedLayerNormalization);
# rotary embeddings become RotaryEmbedding nodes on the model's own cos/sin table. With the KV cache on
# ONNX Runtime's CPU provider, the decoder is instead written from the weights (NNDF/export/llama_graph.py).
LLAMA_LAYOUT = DecoderOnlyLayout(fp16_keep_fp32_ops=("Softmax",), ort_fusions="gpt2", ort_rotary=True,
                                 fp16_keep_fp32_node_patterns=("layernorm/", "/norm/", "/rotary_emb/"),
                                 onnxrt_from_weights=llama_graph.WRITER)

LLAMA_FAMILY = DecoderOnlyFamily(
    name="LLAMA", package="LLAMA",
    variants=(Variant("llama-tiny", arch="llama", build_tiny=build_tiny_llama),
              Variant("qwen2-tiny", arch="qwen2", build_tiny=build_tiny_qwen2),
              Variant("mistral-tiny", arch="mistral", build_tiny=build_tiny_mistral), *hub_variants(HUB)),
    layouts=dict.fromkeys(("default", "llama", "mistral", "qwen2"), LLAMA_LAYOUT),
    model_types=("llama", "mistral", "qwen2"),
)
