"""A decoder-only family: what it declares, and its graph and backends made from that.

A family folder (GPT2, OPT, BLOOM, LLAMA) builds one `DecoderOnlyFamily` with its variants and a
`DecoderOnlyLayout` per model type; its export.py, frameworks.py, onnxrt.py and trt.py then take
`decoder_graph` and the backend makers from it, so they stay a line each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from transformers import AutoModelForCausalLM, DynamicCache

from NNDF.axes import RunSizes
from NNDF.config import RunConfig
from NNDF.decoder_only import CompiledDecoderOnly, TorchDecoderOnly, decoder_spec
from NNDF.family import LoadedModel, ModelFamily
from NNDF.onnx_export import GraphSpec, ort_optimized
from NNDF.ort_session import OrtSession
from NNDF.pipeline import artifact_subdir, onnx_path, token_ids
from NNDF.tokenizer import gpt2_style_tokenizer
from NNDF.torch_placement import framework_placement
from NNDF.workdir import WorkingDir


def frameworks_backend(loaded: LoadedModel, cfg: RunConfig, workdir: WorkingDir | None = None) -> TorchDecoderOnly:
    """HF generate on the loaded model (nothing family-specific: the model is the reference)."""
    return TorchDecoderOnly(loaded.model, token_ids(loaded), framework_placement(cfg.cpu, cfg.fp16))


def trained_positions(config) -> int:
    """The trained length, or a sliding window if the model's cache has one (Mistral): the exported
    cache keeps every position, and attention past a window is not verified."""
    sliding = any(getattr(layer, "is_sliding", False) for layer in DynamicCache(config=config).layers)
    return min(config.max_position_embeddings, config.sliding_window) if sliding else config.max_position_embeddings


@dataclass
class DecoderOnlyFamily(ModelFamily):
    """The usual decoder-only defaults: a causal LM, the shipped byte-level tokenizer for random
    weights, and the trained length (or sliding window) as the longest sequence."""

    model_class: type = AutoModelForCausalLM
    fallback_tokenizer: Callable[[], Any] = field(default=lambda: gpt2_style_tokenizer(512))
    max_positions: Callable[[Any], int] = trained_positions

    def decoder_graph(self, loaded: LoadedModel, use_cache: bool) -> GraphSpec:
        return decoder_spec(loaded.model, self.layout(loaded), with_cache=use_cache)

    def frameworks(self, loaded: LoadedModel, cfg: RunConfig, workdir: WorkingDir | None = None) -> TorchDecoderOnly:
        return frameworks_backend(loaded, cfg)

    def onnxrt(self, loaded: LoadedModel, cfg: RunConfig, workdir: WorkingDir) -> CompiledDecoderOnly:
        layout, spec = self.layout(loaded), self.decoder_graph(loaded, cfg.generation.use_cache)
        path = onnx_path(spec, loaded, self, cfg, workdir)
        if layout.ort_fusions and not cfg.fp16 and "decoder" not in cfg.trt.prebuilt_onnx:
            rotary = (loaded.model, loaded.max_positions) if layout.ort_rotary else None
            path = ort_optimized(path, layout.ort_fusions, loaded.model.config, workdir, rotary)
        session = OrtSession(path, allow_cuda=not cfg.cpu)
        return CompiledDecoderOnly("onnxrt", session, spec, token_ids(loaded), cfg.graph_precision)

    def trt(self, loaded: LoadedModel, cfg: RunConfig, workdir: WorkingDir) -> CompiledDecoderOnly:
        from NNDF import trt_env
        from NNDF.trt_build import engine_for, optimization_profiles
        from NNDF.trt_session import TrtSession

        trt_env.require_tensorrt()  # before any export: a missing GPU should cost a second, not minutes
        spec = self.decoder_graph(loaded, cfg.generation.use_cache)
        ranges = optimization_profiles(spec, cfg.trt, RunSizes.of(cfg), loaded.max_positions)
        engine = cfg.trt.prebuilt_engines.get("decoder")
        if engine is None:
            source = onnx_path(spec, loaded, self, cfg, workdir, form="trt")
            engine = engine_for(source, spec, ranges, cfg.trt, cfg.fp16, workdir, artifact_subdir(self, loaded))
        session = TrtSession(engine, spec, ranges, cfg.trt)
        return CompiledDecoderOnly("trt", session, spec, token_ids(loaded), cfg.graph_precision)
