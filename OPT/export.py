"""OPT graphs: the shared decoder-only graph, with and without KV cache, in OPT's layout."""
from OPT.OPTModelConfig import OPT_FAMILY

decoder_graph = OPT_FAMILY.decoder_graph
