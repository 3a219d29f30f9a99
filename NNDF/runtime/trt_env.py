"""Where the TensorRT backend meets the machine: the tensorrt module, the GPU and its streams.

These functions are the only places that detect hardware, import TensorRT or
touch CUDA streams and graphs, so tests can swap them (and `sys.modules["tensorrt"]`) for a CPU stand-in.
Callers use them through the module (`trt_env.device_identity()`), never
`from NNDF.runtime.trt_env import ...`, so a swapped function is the one they call.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

from NNDF.base.errors import UsageError

MIN_MAJOR = 10      # the named-tensor API (set_input_shape, execute_async_v3) is the only one used
FIX = ("install the extra for your torch build's CUDA (pip install '.[gpu-cu12]' or '.[gpu-cu13]'; "
       "python run.py env shows what is missing) on a machine with an NVIDIA GPU, or choose another backend")


def cuda_available() -> bool:
    return torch.cuda.is_available()


def require_tensorrt():
    """The imported `tensorrt` module, or one UsageError line saying what is missing."""
    missing = []
    trt = None
    try:
        import tensorrt as trt
    except (ImportError, OSError) as e:   # OSError: the wheel is there but libnvinfer is not
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        missing.append(f"the tensorrt package cannot be imported ({reason})")
    if not cuda_available():
        missing.append("no CUDA device is visible to PyTorch")
    if missing:
        raise UsageError(f"the trt backend needs TensorRT and a CUDA GPU: {'; '.join(missing)}", FIX)
    major = int(str(trt.__version__).split(".")[0])
    if major < MIN_MAJOR:
        raise UsageError(f"TensorRT {trt.__version__} is too old for the trt backend (needs {MIN_MAJOR} or newer)", FIX)
    return trt


def trt_version() -> str:
    return str(require_tensorrt().__version__)


def device_identity() -> dict:
    """What an engine is tied to: the GPU model and its compute capability, e.g. "8.6"."""
    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return {"name": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}"}


@functools.cache
def logger_for(trt):
    """One logger per tensorrt module: TensorRT keeps the first logger it is given process-wide."""
    return trt.Logger(trt.Logger.WARNING)


class CudaStream:
    """What a TrtSession needs of a CUDA stream: the handle execute_async_v3 takes, making it torch's
    current stream (so copies and allocations are ordered with the engine's work), waiting for it,
    and capturing one enqueue into a CUDA graph."""

    def __init__(self, stream: torch.cuda.Stream):
        self._stream = stream
        self.handle = stream.cuda_stream

    def active(self):
        return torch.cuda.stream(self._stream)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def capture(self, enqueue: Callable[[], bool]):
        """A graph (with .replay()) of the work `enqueue` puts on this stream; RuntimeError if it cannot be captured."""
        graph = torch.cuda.CUDAGraph()
        # thread_local: only this thread's unsafe calls during capture are errors
        with torch.cuda.graph(graph, stream=self._stream, capture_error_mode="thread_local"):
            if not enqueue():
                raise RuntimeError("TensorRT refused to enqueue during CUDA graph capture")
        return graph


def stream_for(device: torch.device) -> CudaStream:
    """The stream every TrtSession on `device` enqueues on: one dedicated stream per device.

    Never the legacy default stream (handle 0, torch's current stream unless a caller changed it):
    TensorRT logs a warning on every enqueueV3 there and adds synchronisations, and CUDA graphs
    cannot be captured on it. One stream for all sessions keeps a step's engines, copies and beam
    reorders ordered with each other without events.
    """
    return _dedicated_stream(device)


@functools.cache
def _dedicated_stream(device: torch.device) -> CudaStream:
    return open_stream(device)


def open_stream(device: torch.device) -> CudaStream:
    """A new non-default CUDA stream on `device` (tests swap this for a host stand-in)."""
    return CudaStream(torch.cuda.Stream(device))
