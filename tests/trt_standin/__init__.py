"""Test-only CPU stand-in for TensorRT (the module itself is standin_tensorrt.py).

`install(monkeypatch)` puts a fresh stand-in into `sys.modules["tensorrt"]`,
pretends a GPU is present through `NNDF.trt_env`'s detection functions, and
makes `TrtSession` keep its buffers on the CPU. Production code is unchanged
and does not know any of this.
"""

from __future__ import annotations

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


def install(monkeypatch, version: str = VERSION_11, gpu: dict = FAKE_GPU) -> ModuleType:
    from NNDF import trt_env, trt_session

    module = load(version)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr(trt_env, "cuda_available", lambda: True)
    monkeypatch.setattr(trt_env, "device_identity", lambda: dict(gpu))
    monkeypatch.setattr(trt_session, "DEFAULT_DEVICE", torch.device("cpu"))
    return module


def plan_header(path: Path) -> dict:
    """What the stand-in recorded when it built the engine at `path`."""
    data = Path(path).read_bytes()
    magic = b"TRT-STANDIN-PLAN\x00"
    header_len, _ = struct.unpack("<QQ", data[len(magic):len(magic) + 16])
    return json.loads(data[len(magic) + 16:len(magic) + 16 + header_len])
