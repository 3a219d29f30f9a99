"""The KV cache at a graph boundary: exported graphs take and give flat tensors (layer 0 key,
layer 0 value, layer 1 key, ...), and transformers' models take and give Cache objects."""

from __future__ import annotations

import torch
from transformers import DynamicCache


def cache_from_flat(tensors, n_layers: int, config) -> DynamicCache:
    """A DynamicCache holding flat graph inputs (key0, value0, key1, ...)."""
    cache = DynamicCache(config=config)
    for i in range(n_layers):
        cache.update(tensors[2 * i], tensors[2 * i + 1], i)
    return cache


def flat_from_cache(cache: DynamicCache) -> tuple[torch.Tensor, ...]:
    """A cache's layers as flat graph outputs (key0, value0, key1, ...)."""
    return tuple(t for layer in cache.layers for t in (layer.keys, layer.values))
