"""The validated settings of one run (`RunConfig`), split by what they control: the contract every
layer reads. It is built and checked from flags in one place (build_config.py), by the command line
and the Python API alike, and travels as JSON (`to_json` / `from_json`) where a run is stored and
reopened (serving, model repositories): never as argv."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class GenerationSettings:
    """How tokens are chosen; shared by every backend so they can be compared."""

    max_new_tokens: int = 32
    min_new_tokens: int = 0           # EOS is forbidden before this many; benchmark sets it to max
    num_beams: int = 1
    # The one place the KV cache is switched (--use-cache): frameworks passes it to HF generate, and
    # compiled backends (onnxrt, trt) choose their graphs from it when they are made and refuse to
    # generate with the other value (NNDF.runtime.backends.CompiledBackend), so it is never silently ignored.
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
class TokenIds:
    eos: int | None
    pad: int | None
    early_stopping: bool | str = False
    length_penalty: float = 1.0
    forced_bos: int | None = None      # the first generated token (e.g. mBART-50's target language)
    forced_eos: int | None = None      # the token at the last allowed position (e.g. BART)


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
    disable_preview_dynamic_shapes: bool = False   # accepted, no effect (see export/trt_engines._configure)
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
    """`serve` and `export-triton`: the OpenAI-compatible server (NNDF/serving/openai_server.py), the Triton
    server and model repository (NNDF/serving/triton_server.py, NNDF/serving/triton_repo.py)."""

    api: str = "openai"                # serve: "openai" or "triton"
    host: str = "127.0.0.1"
    max_batch_size: int = 16           # triton: requests per batch; openai: rows decoding together
    drain_timeout_s: int = 25          # SIGTERM: how long in-flight requests may take to finish
    # the OpenAI-compatible server
    port: int = 8000
    served_model_name: str | None = None   # None: the variant
    max_queue: int = 64                # requests waiting for a row; more are refused with 503
    api_key: str | None = None
    max_prefill_tokens: int = 256      # prompt tokens prefilled between two decode steps
    max_request_bytes: int = 4 << 20
    # Triton
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_queue_delay_ms: float = 5.0
    instances: int = 1                 # model instances per device (export-triton) / per server (serve)
    output: Path | None = None         # export-triton: the model repository to write
    export_backend: str = "onnxrt"     # export-triton: onnxrt or trt


DEFAULT_INPUT_SEQ_LEN = 128       # --input-seq-len left out
# --quant-block-size left out (README, Quantization, has the measurements): 32 for graphs ONNX Runtime's
# quantizer quantizes (at 64 it moved t5-tiny's token perplexity by 13%, past the int4 gate); 64 with trt
# (TensorRT's INT4 blocks are 64 or 128) and for LLAMA's onnxrt decoder written from the weights, where 32
# decoded 1.1-1.2x slower than llama.cpp q4_0 on TinyLlama-1.1B and 64 kept to the gate (NNDF/kinds/makers.py)
DEFAULT_BLOCK_SIZE = 32
FROM_WEIGHTS_BLOCK_SIZE = 64
TRT_INT4_BLOCK_SIZES = (64, 128)  # the only INT4 blocks TensorRT takes (NNDF/export/quantize.py); 64 is its default


@dataclass(frozen=True)
class QuantSettings:
    """Weight-only quantization of the compiled backends' graphs (--quantize)."""

    scheme: str                   # "int8" or "int4"
    block_size: int = DEFAULT_BLOCK_SIZE   # weights per scale along the input dimension
    # ONNX Runtime's MatMulNBits accuracy level: what activations are multiplied in (0 unset, 1 fp32,
    # 2 fp16, 3 bf16, 4 int8). 4 uses this CPU's AVX-512 VNNI int8 dot products (README: measured).
    accuracy_level: int = 4
    block_given: bool = True      # --quant-block-size was given (else the default may depend on the graph)

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
    require_cuda: bool = False        # frameworks and onnxrt must run on CUDA, or the run is refused
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
    input_seq_len: int = DEFAULT_INPUT_SEQ_LEN
    # which of "input_seq_len" and "output_seq_len" were left to their defaults: a benchmark fits
    # those (only those) to a model with fewer positions (Benchmark.fit)
    default_lengths: tuple[str, ...] = ()
    num_samples: int = 20
    tokens_to_generate: int = 5
    top_n: int = 2
    dataset_path: Path | None = None
    checkpoint: Path | None = None
    image: Path | None = None
    n_positions: int | None = None    # benchmark: extend the model's positions to this many
    quantize: QuantSettings | None = None
    batch_sweep: tuple[int, ...] = ()  # benchmark: encoder batch sizes to time, one table row each
    chat_template: Path | None = None  # chat, serve --api openai: a Jinja template over the tokenizer's own

    @property
    def graph_precision(self) -> str:
        """What the compiled backends' graphs compute in, as results name it."""
        if self.quantize is not None:   # weights; activations are fp16 with --fp16
            return self.quantize.scheme
        return "fp16" if self.fp16 else "fp32"

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict:
        """Plain JSON values (paths as strings, tuples as lists); `from_json` gives back an equal config."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: dict) -> "RunConfig":
        return _from_plain(cls, data)


@dataclass(frozen=True)
class ActionRules:
    """What an action reads of the flags, so building a RunConfig can check them for it. The actions
    table (NNDF/actions/__init__.py) declares one per action and hands them to build_config."""

    name: str
    needs_family: bool = True
    backends: str = "any"               # "any" (listed, default frameworks), "one", "by --backend", "none"
    default_new_tokens: int | str = 32  # an int, or the flag whose value it is ("tokens_to_generate")
    exact_new_tokens: bool = False      # generate exactly that many (EOS held back): benchmark
    fp32_reference: bool = False        # under --quantize, frameworks joins as the reference it is compared to
    own_flags: tuple[str, ...] = ()     # flags only some actions read: checkpoint, compare, n_positions, batch_sweep


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _from_plain(cls, data: dict):
    """A dataclass from `_plain` JSON, each field converted back by its annotation."""
    hints = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in data.items():
        f = hints[name]
        kwargs[name] = _typed(str(f.type), value)
    return cls(**kwargs)


_NESTED = {"GenerationSettings": GenerationSettings, "TimingSettings": TimingSettings, "TrtSettings": TrtSettings,
           "ServeSettings": ServeSettings, "QuantSettings": QuantSettings}


def _typed(annotation: str, value: Any) -> Any:
    if value is None:
        return None
    for name, nested in _NESTED.items():
        if annotation.startswith(name):
            return _from_plain(nested, value)
    if annotation.startswith("tuple"):
        return tuple(value)
    if annotation.startswith("Path"):
        return Path(value)
    if annotation.startswith("dict[str, Path]"):
        return {k: Path(v) for k, v in value.items()}
    return value
