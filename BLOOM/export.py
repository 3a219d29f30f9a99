"""BLOOM graphs: the shared decoder-only graph, with and without KV cache, in BLOOM's layout."""
from BLOOM.BLOOMModelConfig import BLOOM_FAMILY

decoder_graph = BLOOM_FAMILY.decoder_graph
