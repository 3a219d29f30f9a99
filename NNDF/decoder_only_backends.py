"""The three backends for any decoder-only family, given its layout."""

from __future__ import annotations

from NNDF.axes import RunSizes
from NNDF.config import RunConfig
from NNDF.decoder_only import CompiledDecoderOnly, TorchDecoderOnly, decoder_spec
from NNDF.family import LoadedModel, ModelFamily
from NNDF.onnx_export import ort_optimized
from NNDF.ort_session import OrtSession
from NNDF.torch_placement import framework_placement
from NNDF.pipeline import artifact_subdir, onnx_path, token_ids
from NNDF.workdir import WorkingDir


def frameworks_backend(loaded: LoadedModel, cfg: RunConfig) -> TorchDecoderOnly:
    return TorchDecoderOnly(loaded.model, token_ids(loaded), framework_placement(cfg.cpu, cfg.fp16))


def onnxrt_backend(family: ModelFamily, loaded: LoadedModel, cfg: RunConfig, workdir: WorkingDir) -> CompiledDecoderOnly:
    layout = family.layout(loaded)
    spec = decoder_spec(loaded.model, layout, with_cache=cfg.generation.use_cache)
    path = onnx_path(spec, loaded, family, cfg, workdir)
    if layout.ort_fusions and not cfg.fp16 and "decoder" not in cfg.trt.prebuilt_onnx:
        path = ort_optimized(path, layout.ort_fusions, loaded.model.config, workdir)
    session = OrtSession(path, allow_cuda=not cfg.cpu)
    return CompiledDecoderOnly("onnxrt", session, spec, token_ids(loaded), cfg.graph_precision)


def trt_backend(family: ModelFamily, loaded: LoadedModel, cfg: RunConfig, workdir: WorkingDir) -> CompiledDecoderOnly:
    from NNDF import trt_env
    from NNDF.trt_build import engine_for, optimization_profiles
    from NNDF.trt_session import TrtSession

    trt_env.require_tensorrt()  # before any export: a missing GPU should cost a second, not minutes
    spec = decoder_spec(loaded.model, family.layout(loaded), with_cache=cfg.generation.use_cache)
    ranges = optimization_profiles(spec, cfg.trt, RunSizes.of(cfg), loaded.max_positions)
    engine = cfg.trt.prebuilt_engines.get("decoder")
    if engine is None:
        source = onnx_path(spec, loaded, family, cfg, workdir, form="trt")
        engine = engine_for(source, spec, ranges, cfg.trt, cfg.fp16, workdir, artifact_subdir(family, loaded))
    session = TrtSession(engine, spec, ranges, cfg.trt)
    return CompiledDecoderOnly("trt", session, spec, token_ids(loaded), cfg.graph_precision)
