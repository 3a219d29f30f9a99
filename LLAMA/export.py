"""LLAMA graphs: the shared decoder-only graph, with and without KV cache, in LLAMA's layout."""
from LLAMA.LLAMAModelConfig import LLAMA_FAMILY

decoder_graph = LLAMA_FAMILY.decoder_graph
