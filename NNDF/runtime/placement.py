"""Where the PyTorch reference runs: on the user's GPU when torch sees one, as the original demo did.

Comparing a TensorRT engine on an H100 with PyTorch on the host CPU would make every speed-up
meaningless, so `frameworks` follows the hardware: CUDA when available, the CPU with `--cpu`
or when torch has no CUDA. `--fp16` halves the PyTorch model on CUDA; on the CPU half-precision
matmuls are slow or missing, so the model stays fp32 there and the run says so once.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass

import numpy as np
import torch


def cuda_available() -> bool:
    """The one place the selection asks torch about CUDA (tests patch it)."""
    return torch.cuda.is_available()


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype

    @property
    def precision(self) -> str:
        return "fp16" if self.dtype == torch.float16 else "fp32"

    @property
    def device_name(self) -> str:
        """As results name it: "cpu" or "cuda:N"."""
        return str(self.device)

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        """A host integer array (ids, masks) as a tensor where the model runs."""
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64)).to(self.device)

    def synchronize(self) -> None:
        """Wait for queued GPU work, so a timestamp means the step is done, not merely launched."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move and cast the model in place (a no-op when it is already there)."""
        first = next(model.parameters(), None)
        if first is not None and (first.device != self.device or first.dtype != self.dtype):
            model.to(device=self.device, dtype=self.dtype)
        return model


_warned_fp16_cpu = False


def framework_placement(force_cpu: bool, fp16: bool) -> Placement:
    """CUDA (cuda:current) unless `force_cpu` or no CUDA; fp16 only on CUDA."""
    global _warned_fp16_cpu
    if force_cpu or not cuda_available():
        if fp16 and not _warned_fp16_cpu:
            _warned_fp16_cpu = True
            print("note: frameworks runs on the CPU, where the PyTorch model stays fp32 (--fp16 applies to "
                  "the exported graphs only)", file=sys.stderr)
        return Placement(torch.device("cpu"), torch.float32)
    device = torch.device("cuda", torch.cuda.current_device())
    return Placement(device, torch.float16 if fp16 else torch.float32)


@contextlib.contextmanager
def torch_threads(n: int):
    """Keep torch's OpenMP pool from fighting another runtime's threads on a small machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
