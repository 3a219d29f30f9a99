"""Image-to-text backends: compiled graphs through the one generation loop, and HF generate.

Both take an `ImagePrompts` batch where text backends take input_ids, and the
text prefix's attention mask. The vision encoder and the cross-attention cache
generator run once per image; with beam search the resulting cross keys/values
are repeated per beam (as HF expands its image embeddings), so the costly
vision side never runs num_beams times.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import LogitsProcessorList

from NNDF.backends import CompiledBackend, TorchBackend, hf_generation_config
from NNDF.config import GenerationSettings
from NNDF.encoder_decoder import EncoderThenDecoder, encoder_timer
from NNDF.errors import UsageError
from NNDF.generation import GenerationOutput, TokenIds
from NNDF.onnx_export import GraphSpec
from NNDF.session import Session
from NNDF.torch_placement import Placement
from Vision2Seq.export import Vision2SeqLayout

if TYPE_CHECKING:   # the family module makes its backends from here, so it is not imported at load time
    from Vision2Seq.Vision2SeqModelConfig import ImagePrompts



def _no_teacher_forcing() -> UsageError:
    return UsageError("the accuracy action scores text (LAMBADA); an image-to-text model needs an image",
                      "use run, compare, chat --image or benchmark")


class ImageSteps(EncoderThenDecoder):
    """The decoder step after the vision encoder and, with the cache, the cache generator, for one
    batch of images."""

    def __init__(self, sessions: dict[str, Session], specs: dict[str, GraphSpec]):
        super().__init__(sessions, specs)
        self.pixel_values: np.ndarray | None = None     # the images the next generation starts from

    # plan: the vision side's only dynamic axis is the batch of images, which the engines are built for,
    # so only the decoder is checked (CachedDecoder.plan).

    def start(self, input_ids, attention_mask):
        """Vision encoder (+ cache generator) per image; the loop has already repeated the text rows per beam."""
        rows, images = input_ids.shape[0], self.pixel_values.shape[0]
        encoder = self.sessions["encoder"]
        pixels = self.pixel_values.astype(encoder.input_dtype("pixel_values"), copy=False)
        _, context = encoder.run({"pixel_values": pixels}, [], ["image_embeds"])
        if self.with_cache:
            _, context = self.sessions["cache_generator"].run(context, [], self.cross)
        if rows != images:   # beam search: row i continues image i // beams
            idx = np.repeat(np.arange(images), rows // images)
            context = {name: self.session.take(h, idx, axis=0) for name, h in context.items()}
        return self.empty_state(rows, context), input_ids.astype(np.int64), attention_mask.astype(np.int64)


class CompiledVision2Seq(CompiledBackend):
    def __init__(self, name: str, sessions: dict[str, Session], specs: dict[str, GraphSpec], token_ids: TokenIds,
                 precision: str):
        super().__init__(name, ImageSteps(sessions, specs), token_ids, sessions["encoder"].device_name, precision)
        self.sessions = sessions

    def generate(self, prompts: ImagePrompts, attention_mask, settings: GenerationSettings,
                 on_step=None) -> GenerationOutput:
        self.steps.pixel_values = prompts.pixel_values
        return super().generate(prompts.input_ids, attention_mask, settings, on_step)

    def logits(self, input_ids, attention_mask, decoder_ids=None):
        raise _no_teacher_forcing()

    def cached_logits(self, input_ids, attention_mask, first_step, decoder_ids=None):
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
