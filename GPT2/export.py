"""GPT2 graphs: the shared decoder-only graph, with and without KV cache, in GPT2's layout."""
from GPT2.GPT2ModelConfig import GPT2_FAMILY

decoder_graph = GPT2_FAMILY.decoder_graph
