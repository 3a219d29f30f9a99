"""Encoder-decoder models on TensorRT: one engine per graph, all built for the same run."""

from NNDF import trt_env
from NNDF.axes import RunSizes
from NNDF.encoder_decoder import CompiledSeq2Seq
from NNDF.errors import UsageError
from NNDF.pipeline import artifact_subdir, decoder_start_id, token_ids

from Seq2Seq.export import graph_paths, specs_for


def prebuilt_engines(cfg, graphs) -> dict:
    """A model's engines come as a set: a mix of prebuilt and rebuilt engines could disagree."""
    given = {g: p for g, p in cfg.trt.prebuilt_engines.items()}
    wanted = {g.split("_nocache")[0] for g in graphs}
    if given and set(given) != wanted:
        missing = sorted(wanted - set(given))
        flags = " ".join(f"--{g.replace('_', '-')}-engine" for g in missing)
        raise UsageError(f"prebuilt engines must be given together; missing {flags}", "pass all of them or none")
    return {g: given[g.split("_nocache")[0]] for g in graphs} if given else {}


def make_backend(family, loaded, cfg, workdir):
    from NNDF.trt_build import optimization_profiles

    trt_env.require_tensorrt()
    specs = specs_for(family, loaded, cfg.generation.use_cache)
    run = RunSizes.of(cfg)
    ranges = {name: optimization_profiles(spec, cfg.trt, run, loaded.max_positions) for name, spec in specs.items()}
    sessions = trt_sessions(family, loaded, cfg, workdir, specs, ranges)
    return CompiledSeq2Seq("trt", sessions, specs, token_ids(loaded), decoder_start_id(loaded),
                           cfg.graph_precision)


def trt_sessions(family, loaded, cfg, workdir, specs: dict, ranges: dict) -> dict:
    """A TensorRT session per graph: the user's prebuilt engines, or engines built (or reused)
    from the exported graphs."""
    from NNDF.trt_build import engine_for
    from NNDF.trt_session import TrtSession

    engines = prebuilt_engines(cfg, specs)
    if not engines:
        sources = graph_paths(family, loaded, cfg, workdir, specs, form="trt")
        engines = {name: engine_for(sources[name], spec, ranges[name], cfg.trt, cfg.fp16, workdir,
                                    artifact_subdir(family, loaded))
                   for name, spec in specs.items()}
    return {name: TrtSession(engines[name], spec, ranges[name], cfg.trt) for name, spec in specs.items()}
