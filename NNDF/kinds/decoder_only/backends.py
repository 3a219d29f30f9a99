"""Decoder-only backends: the compiled graph through the one generation loop (onnxrt, trt), and
HuggingFace generate on the PyTorch model (frameworks, the reference)."""

from __future__ import annotations

import inspect
import sys

import numpy as np
import torch
from transformers import DynamicCache, LogitsProcessorList

from NNDF.base.config import RunConfig, TokenIds
from NNDF.export.onnx_export import ort_optimized
from NNDF.export.workdir import WorkingDir
from NNDF.graphs.axes import RunSizes, positions_from_mask
from NNDF.graphs.spec import GraphSpec
from NNDF.kinds.decoder_only.graphs import inplace_spec
from NNDF.kinds.decoder_only.steps import DecoderOnlySteps
from NNDF.models.artifacts import artifact_subdir, onnx_path
from NNDF.runtime import trt_env
from NNDF.runtime.backends import CompiledBackend, TorchBackend, hf_generation_config
from NNDF.runtime.generation import GenerationOutput
from NNDF.graphs.inplace_io import is_inplace
from NNDF.runtime.inplace_cache import InPlaceCacheDecoder
from NNDF.runtime.ort_session import OrtSession
from NNDF.runtime.placement import framework_placement
from NNDF.runtime.session import Session
from NNDF.runtime.trt_profiles import optimization_profiles


class CompiledDecoderOnly(CompiledBackend):
    """A decoder-only model on a compiled session; `name` is onnxrt or trt. The step model follows the
    graph's contract: a traced decoder's (DecoderOnlySteps) or an in-place cache's (InPlaceCacheDecoder)."""

    def __init__(self, name: str, session: Session, spec: GraphSpec, token_ids: TokenIds, precision: str):
        steps = InPlaceCacheDecoder(session, spec) if is_inplace(spec) else DecoderOnlySteps(session, spec)
        super().__init__(name, steps, token_ids, session.device_name, precision)


# --------------------------------------------------------------------------- PyTorch reference
class TorchDecoderOnly(TorchBackend):
    """HuggingFace generate on the PyTorch model: the reference every other backend must match."""

    def generate(self, input_ids, attention_mask, settings, on_step=None):
        config = hf_generation_config(settings, self.token_ids)
        out, steps = self._timed(lambda clock, extras: self.model.generate(
            input_ids=self.placement.tensor(input_ids), attention_mask=self.placement.tensor(attention_mask),
            logits_processor=LogitsProcessorList([clock]), generation_config=config, **extras), settings, on_step)
        return GenerationOutput(out[:, input_ids.shape[1]:].numpy(), steps)

    def _forward(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, past=None):
        kwargs = {}
        if "position_ids" in inspect.signature(self.model.forward).parameters:
            kwargs["position_ids"] = self.placement.tensor(positions)
        return self.model(input_ids=self.placement.tensor(ids), attention_mask=self.placement.tensor(mask),
                          past_key_values=past, use_cache=past is not None, **kwargs)

    def logits(self, input_ids, attention_mask, decoder_ids=None):
        with torch.inference_mode():
            out = self._forward(input_ids, attention_mask, positions_from_mask(attention_mask))
        return out.logits.float().cpu().numpy()

    def cached_logits(self, input_ids, attention_mask, first_step, decoder_ids=None):
        """HF's own cache: the prompt part in one pass, then one token per forward, as generate runs."""
        positions = positions_from_mask(attention_mask)
        parts = []
        with torch.inference_mode():
            past = DynamicCache(config=self.model.config)
            for start, stop in [(0, first_step)] + [(t, t + 1) for t in range(first_step, input_ids.shape[1])]:
                out = self._forward(input_ids[:, start:stop], attention_mask[:, :stop], positions[:, start:stop], past)
                past = out.past_key_values
                parts.append(out.logits.float().cpu().numpy())
        return np.concatenate(parts, axis=1)


# --------------------------------------------------------------------------- makers (ModelFamily's frameworks / onnxrt / trt)
def frameworks(family, loaded, cfg: RunConfig, workdir: WorkingDir | None = None) -> TorchDecoderOnly:
    """HF generate on the loaded model (nothing family-specific: the model is the reference)."""
    return TorchDecoderOnly(loaded.model, loaded.token_ids, framework_placement(cfg.cpu, cfg.fp16))


def written_from_weights(layout, loaded, cfg: RunConfig) -> bool:
    """layout.writes_from_weights, saying once per model why a model that asks for it keeps the traced graph."""
    if not layout.asks_from_weights(cfg):
        return False
    why = layout.onnxrt_from_weights.unsupported(loaded.config)
    if why is not None and (loaded.variant, why) not in _said_traced:
        _said_traced.add((loaded.variant, why))
        print(f"note: onnxrt runs the traced decoder of {loaded.variant}: the graph written from the weights "
              f"does not take its {why}", file=sys.stderr)
    return why is None


_said_traced: set = set()     # (variant, reason) already noted


def onnxrt(family, loaded, cfg: RunConfig, workdir: WorkingDir) -> CompiledDecoderOnly:
    layout = family.layout(loaded)
    if written_from_weights(layout, loaded, cfg):
        onnx_dir = workdir.artifact_dir(*artifact_subdir(family, loaded), "onnx")
        path = layout.onnxrt_from_weights.graph(workdir, onnx_dir, loaded.model, loaded.source_key, cfg.quantize,
                                                loaded.max_positions)
        session = OrtSession(path, allow_cuda=False)
        spec = inplace_spec(layout.num_layers(loaded.config))
        return CompiledDecoderOnly("onnxrt", session, spec, loaded.token_ids, cfg.graph_precision)
    spec = family.decoder_graph(loaded, cfg.generation.use_cache)
    path = onnx_path(spec, loaded, family, cfg, workdir)
    if layout.ort_fusions and not cfg.fp16 and "decoder" not in cfg.trt.prebuilt_onnx:
        rotary = (loaded.model, loaded.max_positions) if layout.ort_rotary else None
        path = ort_optimized(path, layout.ort_fusions, loaded.model.config, workdir, rotary)
    session = OrtSession(path, allow_cuda=not cfg.cpu, require_cuda=cfg.require_cuda)
    return CompiledDecoderOnly("onnxrt", session, spec, loaded.token_ids, cfg.graph_precision)


def trt(family, loaded, cfg: RunConfig, workdir: WorkingDir) -> CompiledDecoderOnly:
    from NNDF.export.trt_engines import engine_for
    from NNDF.runtime.trt_session import TrtSession

    trt_env.require_tensorrt()  # before any export: a missing GPU should cost a second, not minutes
    spec = family.decoder_graph(loaded, cfg.generation.use_cache)
    ranges = optimization_profiles(spec, cfg.trt, RunSizes.of(cfg), loaded.max_positions)
    engine = cfg.trt.prebuilt_engines.get("decoder")
    if engine is None:
        source = onnx_path(spec, loaded, family, cfg, workdir, form="trt")
        engine = engine_for(source, spec, ranges, cfg.trt, cfg.fp16, workdir, artifact_subdir(family, loaded))
    session = TrtSession(engine, spec, ranges, cfg.trt)
    return CompiledDecoderOnly("trt", session, spec, loaded.token_ids, cfg.graph_precision)
