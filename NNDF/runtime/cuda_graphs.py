"""CUDA graphs for TrtSession (--use-cuda-graph): a step's kernels replayed in one launch.

A captured graph fixes the input shapes, every tensor address and the execution
context it was captured from. Graphs are kept per (shapes, addresses); the first
time a step is seen it runs normally and is captured, later it is replayed.
Decoder-only step models make every decode step of a generation the same step
(a fixed-capacity KV cache, NNDF/runtime/cached_decoder.py, using `persistent` buffers),
so one graph replays all of them; other steps pay off when they come again (the
iterations of `benchmark`, prompts of one length).

Addresses only come again if buffers are reused rather than freshly allocated:
- each output has two buffers used in turn, because a step's presents become the
  next step's pasts and must not be overwritten while they are read;
- host inputs are copied into a buffer per name and shape; device inputs that no
  graph-mode session owns (e.g. beams repeated from another engine's outputs)
  into one buffer per name;
- beam reordering writes from one of an output's buffers into the other.
Buffers grow (at least doubling) when a step needs more, so a growing cache
reallocates a few times in the first generation and never after.

TensorRT updates an execution context's state at the first enqueue after its
input shapes change, so a graph replayed after its context moved to other shapes
could run with the wrong state. Each graph therefore gets an execution context
of its own that never changes shape. Their scratch memory is shared: TensorRT
only forbids sharing it between contexts that run at the same time, and every
context here runs on one stream, one after another.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections import OrderedDict
from typing import Callable

import numpy as np
import torch

log = logging.getLogger(__name__)

MAX_GRAPHS = 256          # per session; a growing-cache generation of 64 new tokens takes 64 graphs
MAX_HOST_STAGING = 4 * MAX_GRAPHS   # host-input buffers kept per session (each a few token ids wide)

# Every buffer any graph-mode session owns, by address: an input found here keeps its
# address from one generation to the next, so it is bound as it is, never copied.
_OWNED: "weakref.WeakValueDictionary[int, torch.Tensor]" = weakref.WeakValueDictionary()


def _owned(tensor: torch.Tensor) -> bool:
    return _OWNED.get(tensor.data_ptr()) is not None


class GraphRunner:
    """Reused buffers and captured graphs for one engine.

    `new_context()` gives a fresh execution context sharing the session's scratch memory,
    `bind(context, inputs, outputs)` sets its shapes and addresses, `enqueue(context)` runs it.
    """

    def __init__(self, device: torch.device, stream, new_context: Callable, bind: Callable,
                 enqueue: Callable, capacity: int = MAX_GRAPHS):
        self.device, self._stream = device, stream
        self._new_context, self._bind, self._enqueue = new_context, bind, enqueue
        self._capacity = capacity
        self._buffers: dict[tuple, torch.Tensor] = {}     # ("in", name) or ("out", name, slot) -> flat buffer
        self._staging: OrderedDict[tuple, torch.Tensor] = OrderedDict()   # host inputs: (name, shape, dtype) -> buffer
        self._graphs: OrderedDict[tuple, tuple] = OrderedDict()   # key -> (context, graph), least recent first
        self.captures = self.replays = 0

    # ------------------------------------------------------------------ buffers
    def _flat(self, key: tuple, dtype: torch.dtype, numel: int) -> torch.Tensor:
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < numel or buffer.dtype != dtype:
            grown = max(numel, 2 * buffer.numel()) if buffer is not None and buffer.dtype == dtype else numel
            buffer = self._buffers[key] = torch.empty(max(grown, 1), dtype=dtype, device=self.device)
            _OWNED[buffer.data_ptr()] = buffer
        return buffer

    def _view(self, key: tuple, dtype: torch.dtype, shape) -> torch.Tensor:
        numel = math.prod(shape)
        return self._flat(key, dtype, numel)[:numel].view(tuple(shape))

    def persistent(self, name: str, shape, dtype: torch.dtype) -> torch.Tensor:
        """A zeroed buffer for `name` at the same address every time (while the shape fits): a fixed-capacity
        KV cache that decode steps read as their past, so every decode step binds the same addresses."""
        buffer = self._view(("fixed", name), dtype, shape)
        buffer.zero_()
        return buffer

    def input(self, name: str, value, dtype: torch.dtype) -> torch.Tensor:
        """`value` where its address will come again: an owned device buffer as it is, else a copy in ours."""
        if isinstance(value, torch.Tensor) and value.device == self.device and value.dtype == dtype \
                and value.is_contiguous() and _owned(value):
            return value
        if isinstance(value, torch.Tensor):
            staged = self._view(("in", name), dtype, value.shape)
        else:
            staged = self._host_staging(name, dtype, tuple(value.shape))
            value = torch.from_numpy(np.ascontiguousarray(value))
        staged.copy_(value)
        return staged

    def _host_staging(self, name: str, dtype: torch.dtype, shape: tuple) -> torch.Tensor:
        """A buffer per host input name and shape. Per shape, not per name growing to the largest: a
        longer prompt must not move the buffers the decode steps' graph was captured with. Host
        inputs are token ids, masks and positions, so even many shapes cost little; the least
        recently used are dropped beyond MAX_HOST_STAGING."""
        key = (name, shape, dtype)
        buffer = self._staging.get(key)
        if buffer is None:
            buffer = self._staging[key] = torch.empty(shape, dtype=dtype, device=self.device)
            if len(self._staging) > MAX_HOST_STAGING:
                self._staging.popitem(last=False)
        self._staging.move_to_end(key)
        return buffer

    def output(self, name: str, shape, dtype: torch.dtype, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """One of `name`'s two buffers, the one none of this step's inputs lives in."""
        busy = {t.data_ptr() for t in inputs.values()}
        for slot in (0, 1):
            current = self._buffers.get(("out", name, slot))
            if current is None or current.data_ptr() not in busy:
                return self._view(("out", name, slot), dtype, shape)
        raise RuntimeError(f"both buffers of {name} are inputs of this step")   # an output feeds one input at most

    def take(self, handle: torch.Tensor, index: torch.Tensor, axis: int) -> torch.Tensor:
        """Reorder an output into its other buffer, which the step that made it did not read."""
        for (kind, *rest), buffer in list(self._buffers.items()):
            if kind == "out" and buffer.data_ptr() == handle.data_ptr():
                name, slot = rest
                shape = list(handle.shape)
                shape[axis] = index.numel()
                target = self._view(("out", name, 1 - slot), handle.dtype, shape)
                torch.index_select(handle, axis, index, out=target)
                return target
        return handle.index_select(axis, index)   # not ours: the next step copies it into place

    # ------------------------------------------------------------------ graphs
    def execute(self, inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> bool:
        """Replay this step's graph, or run the step and capture it. False if the engine cannot be captured
        (the step has still run, on a context of its own)."""
        key = (tuple((n, tuple(t.shape)) for n, t in inputs.items()),
               tuple((n, t.data_ptr()) for n, t in (*inputs.items(), *outputs.items())))
        entry = self._graphs.get(key)
        if entry is not None:
            self._graphs.move_to_end(key)
            entry[1].replay()
            self.replays += 1
            return True
        context = self._new_context()
        self._bind(context, inputs, outputs)
        self._enqueue(context)       # the first enqueue after setting shapes updates the context's state
        try:
            graph = self._stream.capture(lambda: context.execute_async_v3(self._stream.handle))
        except RuntimeError as e:
            log.warning("--use-cuda-graph: this engine cannot be captured into a CUDA graph (%s); running without",
                        str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
            return False
        self._graphs[key] = (context, graph)
        self.captures += 1
        if len(self._graphs) > self._capacity:
            self._graphs.popitem(last=False)
        return True
