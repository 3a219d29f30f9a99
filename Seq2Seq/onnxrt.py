"""Encoder-decoder models on ONNX Runtime: encoder, cache generator and cached decoder."""

from NNDF.encoder_decoder import CompiledSeq2Seq
from NNDF.ort_session import OrtSession
from NNDF.pipeline import decoder_start_id, token_ids

from Seq2Seq.export import graph_paths, specs_for


def make_backend(family, loaded, cfg, workdir):
    specs = specs_for(family, loaded, cfg.generation.use_cache)
    sessions = {name: OrtSession(path, allow_cuda=not cfg.cpu) for name, path in graph_paths(family, loaded, cfg, workdir, specs).items()}
    return CompiledSeq2Seq("onnxrt", sessions, specs, token_ids(loaded), decoder_start_id(loaded),
                           cfg.graph_precision)
