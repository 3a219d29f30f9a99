"""Test-only CPU stand-in for TensorRT (the module itself is standin_tensorrt.py).

`install(monkeypatch)` puts a fresh stand-in into `sys.modules["tensorrt"]`,
pretends a GPU is present through `NNDF.runtime.trt_env`'s detection functions, gives
sessions a host stream whose capture records stand-in enqueues, and makes
`TrtSession` keep its buffers on the CPU.
`legacy_default_stream(module)` is what production would get if it enqueued on
torch's current stream without changing it (handle 0). Production code is unchanged
and does not know any of this.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import struct
import sys
from pathlib import Path
from types import ModuleType

import torch

VERSION_10 = "10.16.1.11"
VERSION_11 = "11.4.0.106"
FAKE_GPU = {"name": "NVIDIA Stand-in GPU", "compute_capability": "8.6"}
SOURCE = Path(__file__).with_name("standin_tensorrt.py")


def load(version: str = VERSION_11) -> ModuleType:
    """A fresh, independent stand-in module named `tensorrt` that reports `version`."""
    spec = importlib.util.spec_from_file_location("tensorrt", SOURCE)
    module = importlib.util.module_from_spec(spec)
    module._VERSION = version
    spec.loader.exec_module(module)
    return module


class HostStream:
    """trt_env.CudaStream for host memory: nothing to order or wait for, and capture records the
    stand-in's enqueues (a real stream records their kernels). Handle 0 is the legacy default stream."""

    def __init__(self, module: ModuleType, handle: int):
        self._module, self.handle = module, handle

    def active(self):
        return contextlib.nullcontext()

    def synchronize(self) -> None:
        pass

    def capture(self, enqueue):
        module = self._module
        if module._capture is not None:
            raise RuntimeError("a CUDA graph capture is already under way")
        module._capture = []
        try:
            ok = enqueue()
        finally:
            launches, module._capture = module._capture, None
        if not ok:
            raise RuntimeError("TensorRT refused to enqueue during CUDA graph capture")
        return module._Graph(launches)


def legacy_default_stream(module: ModuleType) -> HostStream:
    return HostStream(module, 0)


def install(monkeypatch, version: str = VERSION_11, gpu: dict = FAKE_GPU) -> ModuleType:
    from NNDF.runtime import trt_env
    from NNDF.runtime import trt_session

    module = load(version)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr(trt_env, "cuda_available", lambda: True)
    monkeypatch.setattr(trt_env, "device_identity", lambda: dict(gpu))
    # Production picks its stream itself (trt_env.stream_for); only creating one is swapped, and a
    # fresh cache keeps this install's streams from outliving it. Handle 0 stays the default stream.
    handles = iter(range(1, 1 << 30))
    monkeypatch.setattr(trt_env, "open_stream", lambda device: HostStream(module, next(handles)))
    monkeypatch.setattr(trt_env, "_dedicated_stream", functools.cache(trt_env._dedicated_stream.__wrapped__))
    monkeypatch.setattr(trt_session, "DEFAULT_DEVICE", torch.device("cpu"))
    return module


def plan_header(path: Path) -> dict:
    """What the stand-in recorded when it built the engine at `path`."""
    data = Path(path).read_bytes()
    magic = b"TRT-STANDIN-PLAN\x00"
    header_len, _ = struct.unpack("<QQ", data[len(magic):len(magic) + 16])
    return json.loads(data[len(magic) + 16:len(magic) + 16 + header_len])
