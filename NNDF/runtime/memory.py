"""A run's peak host memory, estimated per stage before it starts.

A run that cannot fit is refused in one line, with the estimate, what is available and what to
change, instead of being OOM-killed minutes into an export. It is checked twice: before loading,
from the model's config on the meta device (NNDF/models/family.py, `ModelFamily.meta_model`: a 7B fp32
checkpoint is refused without reading 28 GB), and after loading, with the action's workload.

A run goes through stages, and its peak is the largest of them:
- load: the torch model (ModelShape.model_bytes, its parameters as loaded);
- export, quantize, fusions, TensorRT build: the model, held while graphs are made (a run keeps it
  until its backends exist), plus the stage's own working set. Rewrites stream the weights one at a
  time (NNDF/export/onnx_weights.py), so that is a few of the graph's largest tensor plus the
  graph's nodes: `WORKING_SET`, measured by benchmarks/export_memory.py (README, Memory);
- run: the torch model if frameworks runs on the host (otherwise it is released once the graphs are
  made, NNDF/actions/flow.py), each host session (the graph's bytes; an fp16 graph on the CPU also
  gets fp32 copies of its weights), and what scales with the flags:
  - KV cache: every row (batch x beams) at the run's longest sequence, twice (a step's past and its
    present are alive together), plus cross-attention keys/values over the encoder input;
  - attention: one layer's scores, rows x heads x query x key positions;
  - logits: rows x vocabulary, a few times, or every position for teacher-forced accuracy.
  Activations other than attention scores and allocator slack are not counted; `HEADROOM` leaves
  room for them. A backend on a GPU (trt, or frameworks/onnxrt on CUDA) keeps its session and KV
  cache there; GPU memory is not estimated, so it is left out and named.
The libraries (torch, ONNX Runtime: about 0.5 GiB) are not counted: they are loaded before the
check, and what is available is measured after them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from NNDF.base.config import TRT_INT4_BLOCK_SIZES, QuantSettings, RunConfig
from NNDF.base.errors import UsageError

GIB = float(1 << 30)
HEADROOM = 1.2           # what is not counted in a run's activations: other activations, allocator slack
LOGIT_COPIES = 4
MEMINFO, CGROUP = Path("/proc/meminfo"), Path("/sys/fs/cgroup")    # where available memory is read

# A stage's own working set beside the model it holds: a * (its graph's largest tensor at the
# graph's precision) + b GiB. Measured with benchmarks/export_memory.py on TinyLlama-1.1B and
# Qwen2.5-1.5B (README, Memory: the table these are rounded up from).
WORKING_SET = {
    "export": (1.0, 0.25),      # the trace, and each weight as it is written
    "fp16": (2.0, 0.25),        # the trace, each weight read in fp32 and halved in slices
    "quantize": (4.0, 0.25),    # one weight read in fp32, transposed, quantized
    "load": (1.0, 0.25),        # a tied tensor made twice while the model is built (Qwen2.5's embedding)
    "fusions": (2.0, 0.75),     # ONNX Runtime's optimizer and symbolic shape inference over the nodes
    "session": (1.0, 0.0),      # ONNX Runtime's session while it loads (on top of the graph it holds)
    "from weights": (1.0, 0.5), # onnxrt's decoder written tensor by tensor (NNDF/export/weights_graph.py)
}
CPU_FP16_SESSION = 3.0          # an fp16 graph's session on the CPU: its weights, and fp32 copies of them
# TensorRT's builder cannot run here: assumed to hold the parsed network's weights and the engine's
# (each about the graph's size) on the host while it builds, beside the model.
TRT_BUILD_GRAPH_COPIES = 2.0


def linear_weight_shapes(model) -> dict[str, tuple[int, int]]:
    """(input dim, output dim) of every linear layer of a torch model: nn.Linear and GPT2's Conv1D
    (which stores its weight as [in, out]); enough to check a block size, or size a quantized graph,
    before any export (works on the meta device)."""
    import torch

    shapes = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            shapes[f"{name}.weight"] = (module.in_features, module.out_features)
        elif type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None:
            shapes[f"{name}.weight"] = tuple(module.weight.shape)
    return shapes


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a model, known before its weights are read: from its config on the
    meta device, or from the loaded model."""

    config: Any
    max_positions: int
    parameters: int                      # each counted once (tied embeddings once)
    model_bytes: int                     # the parameters as loaded (fp32 unless loaded in their own dtype)
    largest: int                         # elements of the largest parameter
    linear: tuple[tuple[int, int, bool], ...] = ()   # (in, out, shares its tensor) of each linear layer

    @classmethod
    def of(cls, model, max_positions: int) -> "ModelShape":
        named = list(model.named_parameters(remove_duplicate=False))
        uses: dict[int, int] = {}
        for _, p in named:
            uses[id(p)] = uses.get(id(p), 0) + 1
        unique = {id(p): p for _, p in named}.values()
        params = dict(named)
        linear = tuple((k, n, uses.get(id(params.get(name)), 1) > 1) for name, (k, n) in linear_weight_shapes(model).items())
        return cls(model.config, max_positions, sum(p.numel() for p in unique),
                   sum(p.numel() * p.element_size() for p in unique), max((p.numel() for p in unique), default=0),
                   linear)

    def graph_bytes(self, fp16: bool, q: QuantSettings | None = None) -> int:
        """Bytes of an exported graph's weights: every parameter at the graph's precision; under `q`,
        each linear weight as blocks of q.bits with a scale per block (a tied one gets a quantized copy
        beside the table it shares)."""
        elem = 2 if fp16 else 4
        total = self.parameters * elem
        if q is not None:
            for k, n, shared in self.linear:
                quantized = k * n * q.bits // 8 + -(-k // q.block_size) * n * elem
                total += quantized - (0 if shared else k * n * elem)
        return total


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
class Stage:
    name: str
    bytes: int          # peak host memory while it runs, above the libraries


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int                     # the run's torch model on the host (0 once it is released)
    sessions: int
    kv_cache: int
    attention: int
    logits: int
    rows: int
    positions: int
    on_gpu: tuple[str, ...] = ()     # backends whose memory is on a GPU, not counted here
    teacher_forced: bool = False
    stages: tuple[Stage, ...] = ()   # the stages before the run (load, export, ...)
    work: Workload | None = None     # what the run feeds the model (None before loading: not known yet)
    from_weights: bool = False       # onnxrt writes its graph from the weights (export_stages)

    @property
    def before_load(self) -> bool:
        return self.work is None and bool(self.stages)

    @property
    def scaling(self) -> int:
        return self.kv_cache + self.attention + self.logits

    @property
    def total(self) -> int:
        """The run itself: weights, sessions, and what scales with the flags, with HEADROOM."""
        return self.weights + self.sessions + int(self.scaling * HEADROOM)

    @property
    def all_stages(self) -> tuple[Stage, ...]:
        return (*self.stages, Stage("run", self.total))

    @property
    def peak(self) -> Stage:
        return max(self.all_stages, key=lambda s: s.bytes)

    def describe(self) -> str:
        parts = f"weights {self.weights / GIB:.2f}, sessions {self.sessions / GIB:.2f}"
        if self.before_load:
            parts += " GiB, KV cache not counted yet"
        else:
            parts += (f", KV cache {self.kv_cache / GIB:.2f} for {self.rows} rows x {self.positions} positions, "
                      f"attention {self.attention / GIB:.2f}, logits {self.logits / GIB:.2f} GiB")
        stages = ", ".join(f"{s.name} {s.bytes / GIB:.2f}" for s in self.all_stages)
        gpu = f"; not counted: GPU memory of {', '.join(self.on_gpu)}" if self.on_gpu else ""
        return (f"about {self.peak.bytes / GIB:.2f} GiB of host memory at its peak, in stage '{self.peak.name}' "
                f"(stages: {stages} GiB; run: {parts}{gpu})")

    def lines(self) -> list[str]:
        """One line per stage, for --info."""
        width = max(len(s.name) for s in self.all_stages)
        out = [f"  {s.name:<{width}}  {s.bytes / GIB:6.2f} GiB" for s in self.all_stages]
        run = (f"weights {self.weights / GIB:.2f} + sessions {self.sessions / GIB:.2f} + {HEADROOM} x (KV cache "
               f"{self.kv_cache / GIB:.2f} for {self.rows} rows x {self.positions} positions, attention "
               f"{self.attention / GIB:.2f}, logits {self.logits / GIB:.2f})")
        out[-1] += f"  ({run})"
        return out


def _first(config, names: tuple[str, ...], default=None):
    return next((getattr(config, n) for n in names if getattr(config, n, None)), default)


def _shape(model) -> ModelShape:
    return model if isinstance(model, ModelShape) else ModelShape.of(model.model, model.max_positions)


def _working(stage: str, largest_bytes: int) -> int:
    a, b = WORKING_SET[stage]
    return int(a * largest_bytes + b * GIB)


def export_stages(cfg: RunConfig, shape: ModelShape, family=None, from_weights: bool = False) -> list[Stage]:
    """The stages that make the run's graphs, each with the model held beside it. `from_weights`: onnxrt
    writes its decoder straight from the weights (quantized as it goes), with no trace, fusions or
    quantizer pass of its own."""
    compiled = [b for b in cfg.backends if b != "frameworks"]
    if not compiled or cfg.trt.prebuilt_onnx or cfg.trt.prebuilt_engines:
        return []
    held, precision = shape.model_bytes, "fp16" if cfg.fp16 else "fp32"
    largest = shape.largest * (2 if cfg.fp16 else 4)
    stages = {}
    if from_weights and "onnxrt" in compiled:
        compiled = [b for b in compiled if b != "onnxrt"]
        stages["onnxrt graph written from the weights"] = held + _working("from weights", shape.largest * 4)
    if compiled:
        stages[f"export {precision}"] = held + _working("fp16" if cfg.fp16 else "export", shape.largest * 4)
    q = cfg.quantize
    fusions = family is None or any(getattr(layout, "ort_fusions", None) for layout in family.layouts.values())
    for backend in compiled:
        if q is not None:      # the quantizers read each weight in fp32, whatever the graph's precision
            stages[f"quantize {q.scheme} ({backend})"] = held + _working("quantize", shape.largest * 4)
        if backend == "onnxrt" and fusions and not cfg.fp16:
            stages["ONNX Runtime fusions"] = held + _working("fusions", largest)
        if backend == "trt":
            graph = shape.graph_bytes(cfg.fp16, q)
            stages["TensorRT engine build (host, assumed)"] = held + int(TRT_BUILD_GRAPH_COPIES * graph)
    return [Stage(name, size) for name, size in stages.items()]


def session_bytes(cfg: RunConfig, shape: ModelShape) -> int:
    """Host memory of one ONNX Runtime session over the run's graph (measured: its bytes; an fp16
    graph on the CPU also gets fp32 copies of its weights)."""
    graph = shape.graph_bytes(cfg.fp16, cfg.quantize)
    if cfg.fp16 and cfg.quantize is None:
        graph = int(graph * CPU_FP16_SESSION)
    return graph


def estimate(cfg: RunConfig, loaded, work: Workload | None, family=None, from_weights: bool = False) -> MemoryEstimate:
    """The peak of `cfg`'s run of `loaded` (a LoadedModel or a ModelShape), feeding it `work` (which
    its action knows; None before loading: the KV cache and activations are then not counted).
    `from_weights`: onnxrt writes its graph from the weights (export_stages)."""
    shape = _shape(loaded)
    act_bytes = 2 if cfg.fp16 else 4
    on_gpu = tuple(b for b in cfg.backends if not runs_on_host(b, cfg))
    on_host = [b for b in cfg.backends if b not in on_gpu]
    compiled = [b for b in on_host if b != "frameworks"]
    weights = shape.model_bytes if "frameworks" in on_host else 0
    sessions = len(compiled) * session_bytes(cfg, shape)
    stages = [Stage("load", shape.model_bytes + _working("load", shape.largest * 4)),
              *export_stages(cfg, shape, family, from_weights)]
    if compiled:   # the sessions open while the run still holds the model (it is released after them)
        stages.append(Stage("opening sessions", shape.model_bytes + sessions + _working("session", shape.largest * act_bytes)))
    if work is None:
        return MemoryEstimate(weights, sessions, 0, 0, 0, 0, 0, on_gpu, False, tuple(stages), None, from_weights)

    config = shape.config
    text = config.get_text_config(decoder=True)
    layers = _first(text, ("num_decoder_layers", "decoder_layers", "num_hidden_layers"), 1)
    heads = _first(text, ("decoder_attention_heads", "num_attention_heads"), 1)
    kv_heads = _first(text, ("num_key_value_heads",), heads)
    head_dim = _first(text, ("head_dim", "d_kv"), text.hidden_size // heads)
    vocab = text.vocab_size
    encoder_decoder = bool(config.is_encoder_decoder)
    gen = cfg.generation

    rows, new = work.rows, work.new_tokens
    prompt = min(work.prompt_len or shape.max_positions, shape.max_positions)
    if encoder_decoder:
        encoder_len, positions = prompt, new + 1
    else:
        encoder_len, positions = 0, min(prompt + new, shape.max_positions)

    per_position = 2 * layers * kv_heads * head_dim * act_bytes
    kv_cache = 2 * rows * per_position * (positions + encoder_len)
    queries = positions if (not gen.use_cache or work.teacher_forced) else max(prompt if not encoder_decoder else 1, 1)
    attention = rows * heads * queries * (positions + encoder_len) * 4
    logit_rows = positions if work.teacher_forced else LOGIT_COPIES
    logits = rows * logit_rows * vocab * 4
    if not on_host:
        kv_cache = attention = logits = 0
    return MemoryEstimate(weights, sessions, kv_cache, attention, logits, rows, positions + encoder_len, on_gpu,
                          work.teacher_forced, tuple(stages), work, from_weights)


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
    """Memory this process may still take: MemAvailable, or less under a cgroup v2 limit."""
    found = []
    try:
        found.append(int(re.search(r"^MemAvailable:\s+(\d+) kB", MEMINFO.read_text(), re.M)[1]) * 1024)
    except (OSError, TypeError):
        pass
    try:
        limit = (CGROUP / "memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int((CGROUP / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def what_to_change(est: MemoryEstimate, cfg: RunConfig, loaded, needed: int, family=None) -> str:
    """The flag to lower when the flags' part of the run is what does not fit; else what would make
    the run fit, each with its own estimate: --quantize int4, the compiled backends without the fp32
    reference, --fp16 on a GPU, a bigger machine."""
    if est.peak.name == "run" and est.scaling > est.weights + est.sessions:
        if cfg.generation.num_beams > max(cfg.batch_size, 1) and not est.teacher_forced:
            return "lower --num-beams"
        if est.rows > 1:
            return "lower --batch-size" + (" or --num-beams" if cfg.generation.num_beams > 1 else "")
        return "lower --output-seq-len or --input-seq-len"
    options = []
    compiled = tuple(b for b in cfg.backends if b != "frameworks")
    if est.stages and compiled and loaded is not None:   # a model's estimate: the alternatives', too
        shape = _shape(loaded)
        if cfg.quantize is None or cfg.quantize.scheme != "int4":
            block = TRT_INT4_BLOCK_SIZES[0] if "trt" in compiled else QuantSettings("int4").block_size
            smaller = estimate(replace(cfg, backends=compiled, quantize=QuantSettings("int4", block)), shape, est.work,
                               family, est.from_weights)
            alone = " without frameworks" if compiled != cfg.backends else ""
            options.append(f"--quantize int4{alone} (about {smaller.peak.bytes / GIB:.1f} GiB)")
        elif compiled != cfg.backends:
            alone = estimate(replace(cfg, backends=compiled), shape, est.work, family, est.from_weights)
            options.append(f"{' '.join(compiled)} without frameworks (about {alone.peak.bytes / GIB:.1f} GiB)")
    if not cfg.fp16:
        options.append("--fp16 on a GPU")
    options.append(f"a machine with at least {needed / GIB:.1f} GiB available")
    return "use " + ", ".join(options[:-1]) + (", or " if len(options) > 1 else "") + options[-1]


def check(est: MemoryEstimate, cfg: RunConfig, available: int | None = None, resident: int = 0,
          loaded=None, family=None) -> None:
    """Refuse a run whose peak stage, beyond the `resident` part of it already held (the loaded
    model), needs more than is available."""
    available = available_bytes() if available is None else available
    if available is None:
        return
    needed = est.peak.bytes - resident
    if needed > available:
        fix = what_to_change(est, cfg, loaded, est.peak.bytes, family)
        raise UsageError(f"this run needs {est.describe()}, but only {available / GIB:.2f} GiB of memory is available",
                         fix)
