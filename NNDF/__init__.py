"""NNDF: the machinery every model family shares, in layers whose imports only go down.

Data flows one way: flags -> a validated RunConfig -> a family -> its graphs (exported, cached)
-> backend sessions -> the one generation loop -> an action's result -> print + JSON. The layers,
from the ground up (`LAYERS`, which tests/test_import_graph.py holds the code to: every import,
function-local ones included, goes to the same layer or a lower one, and nothing imports in a
circle):

 1 base      errors, the RunConfig contract (built and checked from flags, to and from JSON),
             text, progress, timing
 2 graphs    a graph's boundary: axis names, GraphSpec, the flat KV-cache layout
 3 runtime   running graphs: ONNX Runtime and TensorRT sessions, profiles, CUDA graphs, device
             placement, the generation loop, the cached decoder step, memory estimates
 4 export    making graphs: torch -> ONNX with verification, folding, rotary and first-token
             rewrites, quantization, TensorRT engine builds, the working dir and its manifests
 5 models    a family and its loaded model (variants, hub, tokenizers, tiny training, images),
             the example files (checkpoint.toml), data checks, a model's artifacts on disk
 6 kinds     one home per model kind, each with the same parts (graphs, steps, backends,
             family): decoder_only, encoder_decoder, image_to_text, encoder_only
 7 families  the folders GPT2/, OPT/, ..., VIT/: declarations over a kind (Seq2Seq/ and
             Vision2Seq/ keep the original demo's names for two kinds)
 8 registry  family name -> family, and a checkpoint's model type -> the family that fits it
 9 serving   OpenAI-compatible and Triton servers, model repositories
10 actions   accuracy, benchmark, chat, run, compare, list, env, serve, export-triton: one table
11 entry     cli.py (argv -> RunConfig) and api.py (keyword arguments -> RunConfig)
12 front     run.py, and each family's frameworks.py / onnxrt.py / trt.py (the demo's API classes)
"""

# (layer, module-name prefixes); a family folder's frameworks/onnxrt/trt files are "front", the
# rest of it "families" (tests/test_import_graph.py places them by file name).
LAYERS = (
    ("base", ("NNDF.base",)),
    ("graphs", ("NNDF.graphs",)),
    ("runtime", ("NNDF.runtime",)),
    ("export", ("NNDF.export",)),
    ("models", ("NNDF.models",)),
    ("kinds", ("NNDF.kinds",)),
    ("families", ()),
    ("registry", ("NNDF.registry",)),
    ("serving", ("NNDF.serving",)),
    ("actions", ("NNDF.actions",)),
    ("entry", ("NNDF.cli", "NNDF.api")),
    ("front", ("run",)),
)
