"""What an action sees of a backend: generate tokens, or score a sequence."""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from typing import Callable

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessor
from transformers.generation.streamers import BaseStreamer

from NNDF.base.config import GenerationSettings, TokenIds
from NNDF.base.errors import UsageError
from NNDF.runtime.generation import GenerationOutput, OnStep, generate
from NNDF.runtime.placement import Placement, torch_threads


class Backend(ABC):
    name: str

    def __init__(self, token_ids: TokenIds, device: str = "cpu", precision: str = "fp32"):
        self.token_ids = token_ids
        self.device = device          # where it computes, as results name it: "cpu", "cuda:0"
        self.precision = precision    # what its weights and activations are: fp32, fp16, ...

    @abstractmethod
    def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                 settings: GenerationSettings, on_step: OnStep | None = None) -> GenerationOutput:
        """New tokens for each row; `on_step` (greedy and sampling) sees each step's tokens as they are chosen."""

    @abstractmethod
    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray,
               decoder_ids: np.ndarray | None = None) -> np.ndarray:
        """Teacher-forced logits (batch, positions, vocab): every position sees the true previous tokens."""

    def cached_logits(self, input_ids: np.ndarray, attention_mask: np.ndarray, first_step: int,
                      decoder_ids: np.ndarray | None = None) -> np.ndarray:
        """Teacher-forced logits as generation computes them with the KV cache: the (decoder)
        sequence before `first_step` in one prefill pass, each later position as a one-token
        step on the cache. Equal to `logits` up to float error, which is what it checks."""
        raise NotImplementedError(f"{self.name} cannot score through its KV cache")


class CompiledBackend(Backend):
    """A model run as compiled graphs (onnxrt, trt) through the one generation loop.

    Whether it uses the KV cache is decided once, when it is made: its graphs are chosen from the
    run's GenerationSettings.use_cache then. Generating with settings that ask for the other is
    refused rather than silently ignored (a new backend is needed for that).
    """

    def __init__(self, name: str, steps, token_ids: TokenIds, device: str, precision: str):
        super().__init__(token_ids, device, precision)
        self.name, self.steps = name, steps
        self.with_cache: bool = steps.with_cache

    def generate(self, input_ids, attention_mask, settings: GenerationSettings,
                 on_step: OnStep | None = None) -> GenerationOutput:
        if settings.use_cache != self.with_cache:
            have = "with" if self.with_cache else "without"
            raise UsageError(f"this {self.name} backend's graphs were made {have} the KV cache, but generation asked "
                             f"for use_cache={settings.use_cache}", "make the backend with the same use_cache")
        with torch_threads(1):   # torch's threads would fight the runtime's on a small machine
            return generate(self.steps, input_ids, attention_mask, settings, self.token_ids, on_step)

    def logits(self, input_ids, attention_mask, decoder_ids=None):
        with torch_threads(1):
            return self.steps.full_logits(input_ids, attention_mask, decoder_ids).astype(np.float32)

    def cached_logits(self, input_ids, attention_mask, first_step, decoder_ids=None):
        if not self.with_cache:   # graphs without the cache: their one pass is what generation runs
            return self.logits(input_ids, attention_mask, decoder_ids)
        with torch_threads(1):
            return self.steps.cached_logits(input_ids, attention_mask, first_step, decoder_ids).astype(np.float32)


class StepClock(LogitsProcessor):
    """Timestamps each generation step from inside HF generate, without changing scores.

    On a GPU the scores arrive before the kernels that made them have finished, so `sync`
    (Placement.synchronize) waits for them first; otherwise a step's time is its launch time.
    """

    def __init__(self, sync: Callable[[], None] = lambda: None):
        self.stamps: list[float] = []
        self._sync = sync

    def __call__(self, input_ids, scores):
        self._sync()
        self.stamps.append(time.perf_counter())
        return scores


class TorchBackend(Backend):
    """HuggingFace generate on the PyTorch model: the reference every compiled backend must match.

    The model is moved where `placement` says (the user's GPU unless --cpu) when the backend is
    made; run.py makes compiled backends first, because export traces the host fp32 model.
    """

    name = "frameworks"

    def __init__(self, model, token_ids: TokenIds, placement: Placement):
        super().__init__(token_ids, placement.device_name, placement.precision)
        self.placement = placement
        self.model = placement.place(model)

    def _timed(self, generate: Callable[[StepClock, dict], torch.Tensor], settings: GenerationSettings,
               on_step: OnStep | None) -> tuple[torch.Tensor, list[float]]:
        """Run `generate(clock, extras)` (extras: keyword arguments for HF generate) and return its
        output on the host and each step's seconds; sampling draws from torch's generator seeded
        with settings.seed."""
        clock = StepClock(self.placement.synchronize)
        self.placement.synchronize()
        start = time.perf_counter()
        with torch.inference_mode(), hf_generate_extras(settings, on_step) as extras:
            out = generate(clock, extras)
        return out.cpu(), list(np.diff([start] + clock.stamps))


class StepStreamer(BaseStreamer):
    """A transformers streamer feeding `on_step`: HF puts the prompt first, then each step's tokens."""

    def __init__(self, on_step: OnStep):
        self.on_step, self.prompt_seen = on_step, False

    def put(self, value):
        if self.prompt_seen:
            self.on_step(value.reshape(-1).cpu().numpy())
        self.prompt_seen = True

    def end(self):
        pass


@contextlib.contextmanager
def hf_generate_extras(settings: GenerationSettings, on_step: OnStep | None):
    """Keyword arguments for HF generate that stream to `on_step`, and torch's generators seeded
    with --seed while it runs when sampling (restored after, so nothing else's randomness moves).
    HF refuses streamers in beam search, which has no final tokens until it ends."""
    kwargs = {"streamer": StepStreamer(on_step)} if on_step is not None and settings.num_beams == 1 else {}
    if not settings.do_sample:
        yield kwargs
        return
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        yield kwargs


def hf_generation_config(settings: GenerationSettings, ids: TokenIds, start_id: int | None = None) -> GenerationConfig:
    """Exactly the settings our loop implements (including the checkpoint's forced first/last
    tokens) and nothing else of the checkpoint's defaults (no n-gram blocking, no sampling
    unless asked for), so the PyTorch reference and every compiled backend run the same search."""
    return GenerationConfig(max_new_tokens=settings.max_new_tokens, min_new_tokens=settings.min_new_tokens or None,
                            num_beams=settings.num_beams, use_cache=settings.use_cache,
                            do_sample=settings.do_sample, temperature=settings.temperature, top_k=settings.top_k,
                            top_p=settings.top_p, repetition_penalty=settings.repetition_penalty,
                            eos_token_id=ids.eos, pad_token_id=ids.pad if ids.pad is not None else ids.eos,
                            decoder_start_token_id=start_id, early_stopping=ids.early_stopping,
                            length_penalty=ids.length_penalty, num_return_sequences=1,
                            forced_bos_token_id=ids.forced_bos, forced_eos_token_id=ids.forced_eos)


def encoder_timer(encoder: torch.nn.Module, placement: Placement) -> list[float]:
    """A list that collects -start, +end of every forward of `encoder` (its sum is the time spent
    there); the caller clears it before each generation."""
    times: list[float] = []

    def stamp(sign: int):
        placement.synchronize()
        times.append(sign * time.perf_counter())

    encoder.register_forward_pre_hook(lambda *_: stamp(-1))
    encoder.register_forward_hook(lambda *_: stamp(1))
    return times
