"""The validated settings of one run, split by what they control."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class GenerationSettings:
    """How tokens are chosen; shared by every backend so they can be compared."""

    max_new_tokens: int = 32
    min_new_tokens: int = 0           # EOS is forbidden before this many; benchmark sets it to max
    num_beams: int = 1
    # The one place the KV cache is switched (--use-cache): frameworks passes it to HF generate, and
    # compiled backends (onnxrt, trt) choose their graphs from it when they are made and refuse to
    # generate with the other value (NNDF.backends.CompiledBackend), so it is never silently ignored.
    use_cache: bool = True
    # Sampling, with HuggingFace's meaning and defaults (its GenerationConfig's). The repetition
    # penalty also applies to greedy and beam search, as in HF; the rest needs do_sample.
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50                   # 0: no top-k filter
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int = 0                     # each generate call starts its sampler from this seed


@dataclass(frozen=True)
class TimingSettings:
    iterations: int = 10
    number: int = 1
    warmup: int = 3
    duration: float = 0.0             # seconds; when > 0, repeat until this much time has passed too
    percentiles: tuple[int, ...] = (50,)


@dataclass(frozen=True)
class TrtSettings:
    """Engine build settings; only the TensorRT backend reads them."""

    dynamic_batch: bool = False
    min_dynamic_batch: int | None = None
    max_dynamic_batch: int | None = None
    input_profile_max_len: int | None = None
    output_profile_max_len: int | None = None
    disable_preview_dynamic_shapes: bool = False   # accepted, no effect (see trt_build._configure)
    tf32: bool = False                # TensorRT's default is on; off so fp32 engines compare with fp32 PyTorch
    use_timing_cache: bool = False
    workspace_mib: int | None = None
    use_cuda_graph: bool = False
    nvtx_verbose: bool = False
    engine_postfix: str = ""
    prebuilt_onnx: dict[str, Path] = field(default_factory=dict)     # graph name -> path
    prebuilt_engines: dict[str, Path] = field(default_factory=dict)  # graph name -> path


@dataclass(frozen=True)
class ServeSettings:
    """`serve` and `export-triton`: the Triton server and model repository (NNDF/serve.py, NNDF/triton_repo.py)."""

    host: str = "0.0.0.0"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch_size: int = 16
    max_queue_delay_ms: float = 5.0
    instances: int = 1                 # model instances per device (export-triton) / per server (serve)
    drain_timeout_s: int = 25          # SIGTERM: how long in-flight requests may take to finish
    output: Path | None = None         # export-triton: the model repository to write
    export_backend: str = "onnxrt"     # export-triton: onnxrt or trt


@dataclass(frozen=True)
class QuantSettings:
    """Weight-only quantization of the compiled backends' graphs (--quantize)."""

    scheme: str                   # "int8" or "int4"
    block_size: int = 32          # weights per scale along the input dimension
    # ONNX Runtime's MatMulNBits accuracy level: what activations are multiplied in (0 unset, 1 fp32,
    # 2 fp16, 3 bf16, 4 int8). 4 uses this CPU's AVX-512 VNNI int8 dot products (README: measured).
    accuracy_level: int = 4

    @property
    def bits(self) -> int:
        return {"int8": 8, "int4": 4}[self.scheme]


@dataclass(frozen=True)
class RunConfig:
    action: str
    family: str
    backends: tuple[str, ...]
    variant: str
    working_dir: Path
    torch_dir: Path | None = None
    random_weights: bool = False
    seed: int = 0
    batch_size: int = 1
    fp16: bool = False
    cpu: bool = False                 # run frameworks (and onnxrt) on the CPU even where CUDA is available
    use_mask: bool = False
    verbose: bool = False
    info: bool = False
    cleanup: bool = False
    verify: bool = False              # hash every cached file, not only those whose size or mtime changed
    save_output_fpath: Path | None = None
    generation: GenerationSettings = GenerationSettings()
    timing: TimingSettings = TimingSettings()
    trt: TrtSettings = TrtSettings()
    serve: ServeSettings = ServeSettings()
    # action-specific
    input_seq_len: int = 128
    num_samples: int = 20
    tokens_to_generate: int = 5
    top_n: int = 2
    dataset_path: Path | None = None
    checkpoint: Path | None = None
    image: Path | None = None
    n_positions: int | None = None    # benchmark: extend the model's positions to this many
    quantize: QuantSettings | None = None
    batch_sweep: tuple[int, ...] = ()  # benchmark: encoder batch sizes to time, one table row each

    @property
    def graph_precision(self) -> str:
        """What the compiled backends' graphs compute in, as results name it."""
        if self.quantize is not None:   # weights; activations are fp16 with --fp16
            return self.quantize.scheme
        return "fp16" if self.fp16 else "fp32"
