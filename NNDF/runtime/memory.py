"""A run's peak host memory, estimated before it starts.

A batch that cannot fit is refused in one line, naming the flag to lower,
instead of being OOM-killed minutes into the run. The estimate counts what
scales with the flags:
- weights: the torch model, always loaded (frameworks is the reference);
- sessions: one more copy per compiled backend (half of it for an fp16 graph);
- KV cache: every row (batch x beams) at the run's longest sequence, twice
  (a step's past and its present are alive together), plus cross-attention
  keys/values over the encoder input for encoder-decoders;
- attention: one layer's scores, rows x heads x query x key positions (a
  prefill, or every step without a cache, attends over the whole sequence);
- logits: rows x vocabulary, a few times (scores, log-softmax, beams), or every
  position of a sample for teacher-forced accuracy.
Activations other than attention scores and allocator slack are not counted;
that is what `HEADROOM` leaves room for. This is host memory: a backend that runs
on a GPU (trt, or frameworks/onnxrt on CUDA) keeps its session and KV cache
there, and GPU memory is not estimated, so it is left out and named.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from NNDF.base.config import RunConfig
from NNDF.base.errors import UsageError

GIB = float(1 << 30)
HEADROOM = 1.2           # what is not counted above: activations, allocator slack, libraries
LOGIT_COPIES = 4


@dataclass(frozen=True)
class Workload:
    """The most an action feeds the model at once: rows (batch x beams), a prompt of up to
    `prompt_len` tokens (None: the model's positions) and `new_tokens` new ones; a teacher-forced
    run (accuracy) scores every position of a sequence instead of generating."""

    rows: int
    prompt_len: int | None
    new_tokens: int
    teacher_forced: bool = False


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    sessions: int
    kv_cache: int
    attention: int
    logits: int
    rows: int
    positions: int
    on_gpu: tuple[str, ...] = ()     # backends whose memory is on a GPU, not counted here
    teacher_forced: bool = False

    @property
    def total(self) -> int:
        return self.weights + self.sessions + self.kv_cache + self.attention + self.logits

    def describe(self) -> str:
        parts = (f"weights {self.weights / GIB:.2f}, sessions {self.sessions / GIB:.2f}, "
                 f"KV cache {self.kv_cache / GIB:.2f} for {self.rows} rows x {self.positions} positions, "
                 f"attention {self.attention / GIB:.2f}, logits {self.logits / GIB:.2f}")
        gpu = f"; not counted: GPU memory of {', '.join(self.on_gpu)}" if self.on_gpu else ""
        return f"about {self.total / GIB:.2f} GiB of host memory at peak ({parts} GiB{gpu})"


def _first(config, names: tuple[str, ...], default=None):
    return next((getattr(config, n) for n in names if getattr(config, n, None)), default)


def estimate(cfg: RunConfig, loaded, work: Workload) -> MemoryEstimate:
    """The peak of `cfg`'s run with `loaded`, feeding it `work` (which its action knows)."""
    config = loaded.config
    text = config.get_text_config(decoder=True)
    layers = _first(text, ("num_decoder_layers", "decoder_layers", "num_hidden_layers"), 1)
    heads = _first(text, ("decoder_attention_heads", "num_attention_heads"), 1)
    kv_heads = _first(text, ("num_key_value_heads",), heads)
    head_dim = _first(text, ("head_dim", "d_kv"), text.hidden_size // heads)
    vocab = text.vocab_size
    encoder_decoder = bool(config.is_encoder_decoder)
    gen = cfg.generation
    act_bytes = 2 if cfg.fp16 else 4

    weights = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    on_gpu = tuple(b for b in cfg.backends if not runs_on_host(b, cfg))
    on_host = [b for b in cfg.backends if b not in on_gpu]
    compiled = [b for b in on_host if b != "frameworks"]
    sessions = int(len(compiled) * weights * (0.5 if cfg.fp16 else 1.0))

    rows, new = work.rows, work.new_tokens
    prompt = min(work.prompt_len or loaded.max_positions, loaded.max_positions)
    if encoder_decoder:
        encoder_len, positions = prompt, new + 1
    else:
        encoder_len, positions = 0, min(prompt + new, loaded.max_positions)

    per_position = 2 * layers * kv_heads * head_dim * act_bytes
    kv_cache = 2 * rows * per_position * (positions + encoder_len)
    queries = positions if (not gen.use_cache or work.teacher_forced) else max(prompt if not encoder_decoder else 1, 1)
    attention = rows * heads * queries * (positions + encoder_len) * 4
    logit_rows = positions if work.teacher_forced else LOGIT_COPIES
    logits = rows * logit_rows * vocab * 4
    if not on_host:
        kv_cache = attention = logits = 0
    return MemoryEstimate(weights, sessions, kv_cache, attention, logits, rows, positions + encoder_len, on_gpu,
                          work.teacher_forced)


def runs_on_host(backend: str, cfg: RunConfig) -> bool:
    """Whether `backend`'s sessions and KV cache live in host memory (the selection rules of
    placement and ort_session, asked the same way)."""
    if backend == "trt":
        return False
    if cfg.cpu:
        return True
    if backend == "frameworks":
        from NNDF.runtime.placement import cuda_available

        return not cuda_available()
    from NNDF.runtime.ort_session import providers_for

    return providers_for(True)[0] == "CPUExecutionProvider"


def available_bytes() -> int | None:
    """Memory this process may still take: MemAvailable, or less under a cgroup limit."""
    found = []
    try:
        found.append(int(re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)[1]) * 1024)
    except (OSError, TypeError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def flag_to_lower(est: MemoryEstimate, cfg: RunConfig) -> str:
    scaling = est.kv_cache + est.attention + est.logits
    if scaling < est.weights + est.sessions:
        return "use a smaller --variant, fewer backends, or --fp16"
    if cfg.generation.num_beams > max(cfg.batch_size, 1) and not est.teacher_forced:
        return "lower --num-beams"
    if est.rows > 1:
        return "lower --batch-size" + (" or --num-beams" if cfg.generation.num_beams > 1 else "")
    return "lower --output-seq-len or --input-seq-len"


def check(est: MemoryEstimate, cfg: RunConfig, available: int | None = None) -> None:
    """Refuse a run whose estimate, beyond the weights already loaded, exceeds available memory."""
    available = available_bytes() if available is None else available
    if available is None:
        return
    needed = (est.total - est.weights) * HEADROOM
    if needed > available:
        raise UsageError(f"this run needs {est.describe()}, but only {available / GIB:.2f} GiB of memory is available",
                         flag_to_lower(est, cfg))
