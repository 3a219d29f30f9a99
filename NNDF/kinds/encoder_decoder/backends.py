"""Encoder-decoder backends: the encoder, cache generator and cached decoder through the one
generation loop (onnxrt, trt: one session per graph), and HuggingFace generate (frameworks)."""

from __future__ import annotations

import numpy as np
import torch
from transformers import DynamicCache, EncoderDecoderCache, LogitsProcessorList

from NNDF.base.config import RunConfig, TokenIds
from NNDF.export.workdir import WorkingDir
from NNDF.graphs.axes import RunSizes
from NNDF.graphs.spec import GraphSpec
from NNDF.kinds.encoder_decoder.graphs import specs_for
from NNDF.kinds.encoder_decoder.steps import Seq2SeqSteps
from NNDF.models.artifacts import ort_sessions, trt_sessions
from NNDF.runtime import trt_env
from NNDF.runtime.backends import CompiledBackend, TorchBackend, encoder_timer, hf_generation_config
from NNDF.runtime.generation import GenerationOutput
from NNDF.runtime.placement import Placement, framework_placement
from NNDF.runtime.session import Session
from NNDF.runtime.trt_profiles import optimization_profiles


class CompiledSeq2Seq(CompiledBackend):
    def __init__(self, name: str, sessions: dict[str, Session], specs: dict[str, GraphSpec], token_ids: TokenIds,
                 start_id: int, precision: str):
        super().__init__(name, Seq2SeqSteps(sessions, specs, start_id), token_ids, sessions["encoder"].device_name,
                         precision)


class TorchSeq2Seq(TorchBackend):
    def __init__(self, model, token_ids: TokenIds, start_id: int, placement: Placement):
        super().__init__(model, token_ids, placement)
        self.start_id = start_id
        self._encoder_times = encoder_timer(self.model.get_encoder(), placement)

    def generate(self, input_ids, attention_mask, settings, on_step=None):
        config = hf_generation_config(settings, self.token_ids, self.start_id)
        self._encoder_times.clear()
        out, steps = self._timed(lambda clock, extras: self.model.generate(
            input_ids=self.placement.tensor(input_ids), attention_mask=self.placement.tensor(attention_mask),
            generation_config=config, logits_processor=LogitsProcessorList([clock]), **extras), settings, on_step)
        return GenerationOutput(out[:, 1:].numpy(), steps, start_s=sum(self._encoder_times))

    def logits(self, input_ids, attention_mask, decoder_ids=None):
        with torch.inference_mode():
            out = self.model(input_ids=self.placement.tensor(input_ids),
                             attention_mask=self.placement.tensor(attention_mask),
                             decoder_input_ids=self.placement.tensor(decoder_ids), use_cache=False)
        return out.logits.float().cpu().numpy()

    def cached_logits(self, input_ids, attention_mask, first_step, decoder_ids=None):
        """The encoder once, then HF's decoder cache: up to first_step in one pass, then one token per forward."""
        mask = self.placement.tensor(attention_mask)
        parts = []
        with torch.inference_mode():
            encoded = self.model.get_encoder()(input_ids=self.placement.tensor(input_ids), attention_mask=mask)
            past = EncoderDecoderCache(DynamicCache(config=self.model.config), DynamicCache(config=self.model.config))
            for start, stop in [(0, first_step)] + [(t, t + 1) for t in range(first_step, decoder_ids.shape[1])]:
                out = self.model(encoder_outputs=encoded, attention_mask=mask, past_key_values=past, use_cache=True,
                                 decoder_input_ids=self.placement.tensor(decoder_ids[:, start:stop]))
                past = out.past_key_values
                parts.append(out.logits.float().cpu().numpy())
        return np.concatenate(parts, axis=1)


# --------------------------------------------------------------------------- makers (ModelFamily's frameworks / onnxrt / trt)
def frameworks(family, loaded, cfg: RunConfig, workdir: WorkingDir | None = None) -> TorchSeq2Seq:
    return TorchSeq2Seq(loaded.model, loaded.token_ids, loaded.decoder_start_id, framework_placement(cfg.cpu, cfg.fp16))


def onnxrt(family, loaded, cfg: RunConfig, workdir: WorkingDir) -> CompiledSeq2Seq:
    specs = specs_for(family, loaded, cfg.generation.use_cache)
    return CompiledSeq2Seq("onnxrt", ort_sessions(family, loaded, cfg, workdir, specs), specs, loaded.token_ids,
                           loaded.decoder_start_id, cfg.graph_precision)


def trt(family, loaded, cfg: RunConfig, workdir: WorkingDir) -> CompiledSeq2Seq:
    trt_env.require_tensorrt()   # before any export: a missing GPU should cost a second, not minutes
    specs = specs_for(family, loaded, cfg.generation.use_cache)
    run = RunSizes.of(cfg)
    ranges = {name: optimization_profiles(spec, cfg.trt, run, loaded.max_positions) for name, spec in specs.items()}
    sessions = trt_sessions(family, loaded, cfg, workdir, specs, ranges)
    return CompiledSeq2Seq("trt", sessions, specs, loaded.token_ids, loaded.decoder_start_id, cfg.graph_precision)
