"""Image-to-text models on ONNX Runtime: vision encoder, cache generator and cached decoder."""

from NNDF.ort_session import OrtSession
from NNDF.pipeline import token_ids

from Vision2Seq.backends import CompiledVision2Seq
from Seq2Seq.export import graph_paths
from Vision2Seq.export import specs_for


def make_backend(family, loaded, cfg, workdir):
    specs = specs_for(family, loaded, cfg.generation.use_cache)
    sessions = {name: OrtSession(path, allow_cuda=not cfg.cpu) for name, path in graph_paths(family, loaded, cfg, workdir, specs).items()}
    return CompiledVision2Seq("onnxrt", sessions, specs, token_ids(loaded), cfg.graph_precision)
