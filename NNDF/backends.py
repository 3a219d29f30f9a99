"""What an action sees of a backend: generate tokens, or score a sequence."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod

import numpy as np
import torch

from NNDF.config import GenerationSettings
from NNDF.generation import GenerationOutput, TokenIds


class Backend(ABC):
    name: str

    def __init__(self, token_ids: TokenIds):
        self.token_ids = token_ids

    @abstractmethod
    def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                 settings: GenerationSettings) -> GenerationOutput: ...

    @abstractmethod
    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray,
               decoder_ids: np.ndarray | None = None) -> np.ndarray:
        """Teacher-forced logits (batch, positions, vocab): every position sees the true previous tokens."""

    def describe(self) -> str:
        return self.name


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
