"""The contract every compiled-graph backend (ONNX Runtime, TensorRT) fulfils.

`infer(feed)` is the simple path: numpy in, numpy out. `run(...)` is the hot
path used by the generation loop: some inputs may be *device handles* returned
by an earlier call (the KV cache), and the caller says which outputs it wants
on the host (logits) and which it wants to keep on the device (presents), so
the cache never makes a host round trip between steps. What a handle is
(an OrtValue, a CUDA tensor) is the session's business alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np

Handle = Any


class Session(ABC):
    input_names: list[str]
    output_names: list[str]
    device_name: str = "cpu"      # where its tensors live, as results name it: "cpu", "cuda:0"
    # True where a step pays for repeating its exact shapes and buffer addresses (TensorRT with CUDA
    # graphs): step models then keep the KV cache in fixed-capacity buffers (see cached_decoder.py).
    fixed_shape_steps: bool = False

    @abstractmethod
    def input_dtype(self, name: str) -> np.dtype: ...

    @abstractmethod
    def input_shape(self, name: str) -> list[int | str | None]:
        """Static dims as ints; dynamic dims as their axis name (or None if unnamed)."""

    @abstractmethod
    def run(self, feed: dict[str, np.ndarray | Handle], host_outputs: Sequence[str],
            device_outputs: Sequence[str] = ()) -> tuple[dict[str, np.ndarray], dict[str, Handle]]: ...

    @abstractmethod
    def zeros(self, name: str, shape: Sequence[int]) -> Handle:
        """A device handle shaped `shape` with input `name`'s dtype (e.g. an empty past)."""

    @abstractmethod
    def take(self, handle: Handle, indices: np.ndarray, axis: int = 0) -> Handle:
        """Reorder a device handle along `axis` (beam search), staying on the device."""

    def cache_buffer(self, name: str, shape: Sequence[int]) -> Handle:
        """A zeroed device buffer for input `name` that a step model keeps writing into and feeding back.
        Sessions where addresses matter give the same buffer each time it is asked for again."""
        return self.zeros(name, shape)

    def run_into(self, feed: dict[str, np.ndarray | Handle], host_outputs: Sequence[str],
                 into: dict[str, Handle]) -> dict[str, np.ndarray]:
        """`run`, with the outputs named in `into` written into those device buffers (a graph that updates
        its KV cache in place reads and writes the same buffer: NNDF/runtime/inplace_cache.py)."""
        raise NotImplementedError(f"{type(self).__name__} cannot write outputs into given buffers")

    def slot_buffer(self, name: str, shape: Sequence[int]) -> Handle:
        """A device buffer for input `name` whose contents do not matter (each slot is written before it is read)."""
        return self.zeros(name, shape)

    def leading_rows(self, handle: Handle, rows: int) -> Handle:
        """A handle on the first `rows` rows (along axis 0) of `handle`, sharing its memory: what is written
        through one is read through the other."""
        raise NotImplementedError(f"{type(self).__name__} cannot view a buffer's rows")

    def copy_slots(self, target: Handle, source: Handle, rows: Sequence[int], at: int, slots: int,
                   batch_axis: int, slot_axis: int) -> None:
        """Copy the first `slots` slots (along `slot_axis`) of rows `rows` of `source` into rows at, at + 1, ...
        of `target`, in place, on the device."""
        raise NotImplementedError(f"{type(self).__name__} cannot copy cache slots")

    def right_align_into(self, target: Handle, source: Handle, axis: int, index: np.ndarray | None = None,
                         batch_axis: int = 0) -> None:
        """Copy the last n = min(len(target), len(source)) slots of `source` along `axis` into the last n
        slots of `target`, in place, on the device; rows first reordered by `index` along `batch_axis`."""
        raise NotImplementedError(f"{type(self).__name__} keeps no fixed-capacity buffers")

    def regroup(self, name: str, parts: Sequence[tuple[Handle, Sequence[int]]], batch_axis: int, slot_axis: int,
                length: int) -> Handle:
        """A device buffer for input `name` holding, in order, rows `rows` (along `batch_axis`) of each
        (handle, rows) part, every row right-aligned into `length` slots along `slot_axis`: its newest slots
        kept at the end, the first ones zero where it had fewer (or its oldest dropped where it had more).
        Continuous batching (NNDF/runtime/continuous.py) regroups the KV cache with it when rows join or
        leave, and feeds the result to the next step before it regroups again: a session may reuse the
        buffer it returns for `name` in the regroup after next (ONNX Runtime on the CPU does)."""
        raise NotImplementedError(f"{type(self).__name__} cannot regroup cache rows")

    def largest(self, axis: str) -> int | None:
        """The largest size of a dynamic axis this session accepts, or None if it takes any."""
        return None

    def check_fits(self, sizes: dict[str, int], what: str) -> None:
        """Fail now, naming the flag to change, if a coming run needs axis sizes this session cannot take.

        Step models call it with the largest sizes a generation will reach, so a run that would
        leave a TensorRT profile fails before its first step. Most sessions take any size.
        """

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        host, _ = self.run(feed, self.output_names)
        return host


def regrouped_shape(shapes: Sequence[Sequence[int]], rows: int, batch_axis: int, slot_axis: int, length: int) -> list[int]:
    """The shape `Session.regroup` gives: the parts' shape with `rows` rows and `length` slots."""
    shape = list(shapes[0])
    shape[batch_axis], shape[slot_axis] = rows, length
    return shape


def concrete_shape(template: Sequence[int | str | None], axes: dict[int, str], sizes: dict[str, int]) -> list[int]:
    """Fill a graph input's dynamic dims from named sizes, e.g. past -> [batch, heads, 0, head_dim]."""
    shape = []
    for i, dim in enumerate(template):
        if i in axes:
            shape.append(sizes[axes[i]])
        elif isinstance(dim, int) and dim >= 0:
            shape.append(dim)
        else:
            raise ValueError(f"dimension {i} of {list(template)} is dynamic but has no size")
    return shape
