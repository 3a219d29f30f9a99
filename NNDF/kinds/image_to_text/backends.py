"""Image-to-text backends: compiled graphs through the one generation loop, and HF generate.

Both take an `ImagePrompts` batch where text backends take input_ids, and the
text prefix's attention mask. The vision encoder and the cross-attention cache
generator run once per image; with beam search the resulting cross keys/values
are repeated per beam (as HF expands its image embeddings), so the costly
vision side never runs num_beams times.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from transformers import LogitsProcessorList

from NNDF.base.config import GenerationSettings, RunConfig, TokenIds
from NNDF.export.workdir import WorkingDir
from NNDF.graphs.axes import RunSizes
from NNDF.graphs.spec import GraphSpec
from NNDF.kinds.image_to_text.graphs import Vision2SeqLayout, specs_for
from NNDF.kinds.image_to_text.model import ImagePrompts
from NNDF.kinds.image_to_text.steps import ImageSteps
from NNDF.models.artifacts import ort_sessions, trt_sessions
from NNDF.runtime import trt_env
from NNDF.runtime.backends import CompiledBackend, TorchBackend, encoder_timer, hf_generation_config
from NNDF.runtime.generation import GenerationOutput
from NNDF.runtime.placement import Placement, framework_placement
from NNDF.runtime.session import Session
from NNDF.runtime.trt_profiles import optimization_profiles

# The vision encoder and the cache generator run once per image, not per beam, so their TensorRT
# profiles are for --batch-size rows; the decoder's for batch x beams, tuned for a prompt of one
# token ([DEC]; --input-seq-len means nothing here).
PER_IMAGE = ("encoder", "cache_generator")


class CompiledVision2Seq(CompiledBackend):
    def __init__(self, name: str, sessions: dict[str, Session], specs: dict[str, GraphSpec], token_ids: TokenIds,
                 precision: str):
        super().__init__(name, ImageSteps(sessions, specs), token_ids, sessions["encoder"].device_name, precision)
        self.sessions = sessions

    def generate(self, prompts: ImagePrompts, attention_mask, settings: GenerationSettings,
                 on_step=None) -> GenerationOutput:
        self.steps.pixel_values = prompts.pixel_values
        return super().generate(prompts.input_ids, attention_mask, settings, on_step)

    def logits(self, prompts: ImagePrompts, attention_mask, decoder_ids=None):
        """Teacher-forced logits of `prompts.input_ids` (bos + caption, right-padded) given its images."""
        self.steps.pixel_values = prompts.pixel_values
        return super().logits(prompts.input_ids, attention_mask)

    def cached_logits(self, prompts: ImagePrompts, attention_mask, first_step, decoder_ids=None):
        if not self.with_cache:   # graphs without the cache: their one pass is what generation runs
            return self.logits(prompts, attention_mask)
        self.steps.pixel_values = prompts.pixel_values
        return super().cached_logits(prompts.input_ids, attention_mask, first_step)


class TorchVision2Seq(TorchBackend):
    """The model's own HF generate: the reference every compiled backend must match."""

    def __init__(self, model, layout: Vision2SeqLayout, token_ids: TokenIds, placement: Placement):
        super().__init__(model, token_ids, placement)
        self.layout = layout
        self._encoder_times = encoder_timer(layout.vision_model(self.model), placement)

    def generate(self, prompts: ImagePrompts, attention_mask, settings: GenerationSettings,
                 on_step=None) -> GenerationOutput:
        config = hf_generation_config(settings, self.token_ids)
        pixels = torch.from_numpy(prompts.pixel_values).to(self.placement.device, self.placement.dtype)
        self._encoder_times.clear()
        out, steps = self._timed(lambda clock, extras: self.layout.hf_generate(
            self.model, pixels, self.placement.tensor(prompts.input_ids), self.placement.tensor(attention_mask),
            generation_config=config, logits_processor=LogitsProcessorList([clock]), **extras), settings, on_step)
        return GenerationOutput(out[:, prompts.input_ids.shape[1]:].numpy(), steps, start_s=sum(self._encoder_times))

    def logits(self, prompts: ImagePrompts, attention_mask, decoder_ids=None):
        """The text decoder's logits over the captions, attending to the vision model's image embeddings."""
        with torch.inference_mode():
            pixels = torch.from_numpy(prompts.pixel_values).to(self.placement.device, self.placement.dtype)
            images = self.layout.vision_model(self.model)(pixel_values=pixels).last_hidden_state
            out = self.layout.text_decoder(self.model)(input_ids=self.placement.tensor(prompts.input_ids),
                                                       attention_mask=self.placement.tensor(attention_mask),
                                                       encoder_hidden_states=images, use_cache=False)
        return out.logits.float().cpu().numpy()

    def cached_logits(self, prompts: ImagePrompts, attention_mask, first_step, decoder_ids=None):
        """The reference's logits in one pass: with or without a cache they are the same numbers (up
        to float error), which is what the compiled backends' cached scoring is checked against."""
        return self.logits(prompts, attention_mask)


# --------------------------------------------------------------------------- makers (ModelFamily's frameworks / onnxrt / trt)
def frameworks(family, loaded, cfg: RunConfig, workdir: WorkingDir | None = None) -> TorchVision2Seq:
    return TorchVision2Seq(loaded.model, family.layout(loaded), loaded.token_ids, framework_placement(cfg.cpu, cfg.fp16))


def onnxrt(family, loaded, cfg: RunConfig, workdir: WorkingDir) -> CompiledVision2Seq:
    specs = specs_for(family, loaded, cfg.generation.use_cache)
    return CompiledVision2Seq("onnxrt", ort_sessions(family, loaded, cfg, workdir, specs), specs, loaded.token_ids,
                              cfg.graph_precision)


def trt(family, loaded, cfg: RunConfig, workdir: WorkingDir) -> CompiledVision2Seq:
    trt_env.require_tensorrt()   # before any export: a missing GPU should cost a second, not minutes
    specs = specs_for(family, loaded, cfg.generation.use_cache)
    run = RunSizes.of(cfg)
    per_image, decoder_run = replace(run, num_beams=1), replace(run, prompt_len=1)
    ranges = {name: optimization_profiles(spec, cfg.trt, per_image if name in PER_IMAGE else decoder_run,
                                          loaded.max_positions)
              for name, spec in specs.items()}
    sessions = trt_sessions(family, loaded, cfg, workdir, specs, ranges)
    return CompiledVision2Seq("trt", sessions, specs, loaded.token_ids, cfg.graph_precision)
