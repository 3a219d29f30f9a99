"""Image-to-text backends: compiled graphs through the one generation loop, and HF generate.

Both take an `ImagePrompts` batch where text backends take input_ids, and the
text prefix's attention mask. The vision encoder and the cross-attention cache
generator run once per image; with beam search the resulting cross keys/values
are repeated per beam (as HF expands its image embeddings), so the costly
vision side never runs num_beams times.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import LogitsProcessorList

from NNDF.axes import BATCH, PAST, largest_sizes, run_description
from NNDF.backends import Backend, TorchBackend, hf_generation_config, positions_from_mask, torch_threads
from NNDF.config import GenerationSettings
from NNDF.encoder_decoder import bind_decoder, encoder_timer
from NNDF.errors import UsageError
from NNDF.generation import GenerationOutput, TokenIds, generate
from NNDF.onnx_export import GraphSpec
from NNDF.session import Session, concrete_shape
from NNDF.torch_placement import Placement
from Vision2Seq.export import Vision2SeqLayout
from Vision2Seq.Vision2SeqModelConfig import ImagePrompts



def _no_teacher_forcing() -> UsageError:
    return UsageError("the accuracy action scores text (LAMBADA); an image-to-text model needs an image",
                      "use run, compare, chat --image or benchmark")


class ImageSteps:
    """The generation loop's StepModel for one batch of images over compiled sessions."""

    def __init__(self, sessions: dict[str, Session], specs: dict[str, GraphSpec], with_cache: bool,
                 pixel_values: np.ndarray):
        self.sessions, self.with_cache, self.pixel_values = sessions, with_cache, pixel_values
        bind_decoder(self, sessions, specs, with_cache)

    def plan(self, rows, prompt_len, new_tokens):
        # The vision side's only dynamic axis is the batch of images, which the engines are built for.
        self.decoder.check_fits(largest_sizes(rows, prompt_len, new_tokens, self.with_cache),
                                run_description(rows, prompt_len, new_tokens))

    def start(self, input_ids, attention_mask):
        """Vision encoder (+ cache generator) per image; the loop has already repeated the text rows per beam."""
        rows, images = input_ids.shape[0], self.pixel_values.shape[0]
        encoder = self.sessions["encoder"]
        pixels = self.pixel_values.astype(encoder.input_dtype("pixel_values"), copy=False)
        _, out = encoder.run({"pixel_values": pixels}, [], ["image_embeds"])
        if self.with_cache:
            _, cross = self.sessions["cache_generator"].run({"image_embeds": out["image_embeds"]}, [], self.cross)
            image_side = [cross[n] for n in self.cross]
        else:
            image_side = [out["image_embeds"]]
        if rows != images:   # beam search: row i continues image i // beams
            idx = np.repeat(np.arange(images), rows // images)
            image_side = [self.decoder.take(h, idx, axis=0) for h in image_side]
        state = {"seen": 0, "image_side": image_side, "past": []}
        if self.with_cache:
            state["past"] = [self.decoder.zeros(n, concrete_shape(self.decoder.input_shape(n), self.decoder_spec.inputs[n],
                                                                  {BATCH: rows, PAST: 0}))
                             for n in self.past]
        return state, input_ids.astype(np.int64), attention_mask.astype(np.int64)

    def step(self, state, ids, mask):
        seen = state["seen"] if self.with_cache else 0
        feed = {"input_ids": ids[:, seen:], "attention_mask": mask, "position_ids": positions_from_mask(mask)[:, seen:],
                "logits_index": np.array([ids.shape[1] - seen - 1], np.int64)}
        if not self.with_cache:
            feed["image_embeds"] = state["image_side"][0]
            return self.decoder.run(feed, ["logits"])[0]["logits"][:, -1]
        feed.update(zip(self.past, state["past"]))
        feed.update(zip(self.cross, state["image_side"]))
        host, device = self.decoder.run(feed, ["logits"], self.present)
        state["past"] = [device[n] for n in self.present]
        state["seen"] = ids.shape[1]
        return host["logits"][:, -1]

    def reorder(self, state, beam_idx):
        # Beams of one image share its cross keys/values and beam_idx never crosses images,
        # so only the decoder's own past needs reordering.
        state["past"] = [self.decoder.take(h, beam_idx, axis=0) for h in state["past"]]


class CompiledVision2Seq(Backend):
    def __init__(self, name: str, sessions: dict[str, Session], specs: dict[str, GraphSpec], with_cache: bool,
                 token_ids: TokenIds, precision: str):
        super().__init__(token_ids, sessions["encoder"].device_name, precision)
        self.name, self.sessions, self.specs, self.with_cache = name, sessions, specs, with_cache

    def generate(self, prompts: ImagePrompts, attention_mask, settings: GenerationSettings,
                 on_step=None) -> GenerationOutput:
        steps = ImageSteps(self.sessions, self.specs, self.with_cache, prompts.pixel_values)
        with torch_threads(1):
            return generate(steps, prompts.input_ids, attention_mask, settings, self.token_ids, on_step)

    def logits(self, input_ids, attention_mask, decoder_ids=None):
        raise _no_teacher_forcing()


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

    def logits(self, input_ids, attention_mask, decoder_ids=None):
        raise _no_teacher_forcing()
