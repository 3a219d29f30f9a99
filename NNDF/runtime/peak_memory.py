"""Peak memory measured while a block runs (never estimated): what `benchmark` reports beside
latency, as the usual comparison tables between HF, llama-cpp-python and Ollama give it.

- host: this process's peak resident set. On Linux the kernel keeps it (VmHWM in
  /proc/self/status) and resets it on request (writing 5 to /proc/self/clear_refs), so the peak
  of the block alone is read, however short the spike; where that reset is refused, a sampler
  thread reads the resident set every few milliseconds instead. Everything the process holds counts:
  the loaded torch model and every other backend's session loaded beside it, so compare backends
  run in separate processes (the benchmarks/ scripts do) when their own footprints matter.
  The resident set also counts the pages of files mapped into the process (a safetensors checkpoint
  being read), which the kernel can drop at will; `anon_mb`, sampled, is the part it cannot: memory
  the process allocated, what runs a machine out of memory.
- GPU: the device's memory in use (cudaMemGetInfo), sampled while the block runs, when CUDA is
  initialised; it covers every allocator on the device (PyTorch's, ONNX Runtime's arena,
  TensorRT's), and other processes on the same GPU too.
"""

from __future__ import annotations

import re
import sys
import threading
from pathlib import Path

MB = float(1 << 20)
SAMPLE_S = 0.005
_STATUS = Path("/proc/self/status")


def resident_bytes() -> int | None:
    """This process's resident set now."""
    return _status_field("VmRSS")


def _status_field(name: str) -> int | None:
    return _status_fields(name)[0]


def _status_fields(*names: str) -> list[int | None]:
    try:
        text = _STATUS.read_text()
    except OSError:
        return [None] * len(names)
    found = [re.search(rf"^{name}:\s+(\d+) kB", text, re.M) for name in names]
    return [int(f[1]) * 1024 if f else None for f in found]


def _reset_host_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _gpu_used() -> int | None:
    """Bytes in use on the current CUDA device, if this process has initialised CUDA."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    free, total = torch.cuda.mem_get_info()
    return total - free


class PeakMemory:
    """`with PeakMemory() as peak: ...` then `peak.host_mb`, `peak.anon_mb`, `peak.gpu_mb` (None where not
    measured)."""

    def __init__(self, sample_s: float = SAMPLE_S):
        self.sample_s = sample_s
        self.host_mb: float | None = None
        self.gpu_mb: float | None = None
        self.anon_mb: float | None = None
        self._host: list[int] = []
        self._anon: list[int] = []
        self._gpu: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._kernel_peak = False

    def _sample(self) -> None:
        while True:
            (rss, anon), gpu = _status_fields("VmRSS", "RssAnon"), _gpu_used()
            if rss is not None:
                self._host.append(rss)
            if anon is not None:
                self._anon.append(anon)
            if gpu is not None:
                self._gpu.append(gpu)
            if self._stop.wait(self.sample_s):
                return

    def __enter__(self) -> "PeakMemory":
        self._kernel_peak = _reset_host_peak() and _status_field("VmHWM") is not None
        self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        host = list(self._host)
        if self._kernel_peak:
            host.append(_status_field("VmHWM") or 0)
        self.host_mb = max(host) / MB if host else None
        self.gpu_mb = max(self._gpu) / MB if self._gpu else None
        self.anon_mb = max(self._anon) / MB if self._anon else None

    def result(self, device: str) -> dict:
        """The result names: `peak_host_memory_mb`, and `peak_gpu_memory_mb` for a backend on a CUDA
        device (None elsewhere)."""
        on_gpu = device.startswith("cuda")
        return {"peak_host_memory_mb": self.host_mb, "peak_gpu_memory_mb": self.gpu_mb if on_gpu else None}

