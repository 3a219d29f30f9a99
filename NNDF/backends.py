"""What an action sees of a backend: generate tokens, or score a sequence."""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from typing import Callable

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessor

from NNDF.config import GenerationSettings
from NNDF.generation import GenerationOutput, TokenIds
from NNDF.torch_placement import Placement


class Backend(ABC):
    name: str

    def __init__(self, token_ids: TokenIds, device: str = "cpu", precision: str = "fp32"):
        self.token_ids = token_ids
        self.device = device          # where it computes, as results name it: "cpu", "cuda:0"
        self.precision = precision    # what its weights and activations are: fp32, fp16, ...

    @abstractmethod
    def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                 settings: GenerationSettings) -> GenerationOutput: ...

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


@contextlib.contextmanager
def torch_threads(n: int):
    """Keep torch's OpenMP pool from fighting another runtime's threads on a small machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def positions_from_mask(mask: np.ndarray) -> np.ndarray:
    """Position ids as HF generate derives them: count of real tokens so far; pads get 1."""
    pos = np.cumsum(mask, axis=1) - 1
    return np.where(mask == 0, 1, pos).astype(np.int64)


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

    def _timed(self, generate: Callable[[StepClock], torch.Tensor]) -> tuple[torch.Tensor, list[float]]:
        """Run `generate(clock)` and return its output on the host and each step's seconds."""
        clock = StepClock(self.placement.synchronize)
        self.placement.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            out = generate(clock)
        return out.cpu(), list(np.diff([start] + clock.stamps))


def hf_generation_config(settings: GenerationSettings, ids: TokenIds, start_id: int | None = None) -> GenerationConfig:
    """Exactly the settings our loop implements (including the checkpoint's forced first/last
    tokens) and nothing else of the checkpoint's defaults (no n-gram blocking or sampling),
    so the PyTorch reference and every compiled backend run the same search."""
    return GenerationConfig(max_new_tokens=settings.max_new_tokens, min_new_tokens=settings.min_new_tokens or None,
                            num_beams=settings.num_beams, do_sample=False, use_cache=settings.use_cache,
                            eos_token_id=ids.eos, pad_token_id=ids.pad if ids.pad is not None else ids.eos,
                            decoder_start_token_id=start_id, early_stopping=ids.early_stopping,
                            length_penalty=ids.length_penalty, num_return_sequences=1,
                            forced_bos_token_id=ids.forced_bos, forced_eos_token_id=ids.forced_eos)
