"""Every flag of a run, once: its name, type, default and help.

The command line (NNDF/cli.py) builds its parser from this table and the Python API (NNDF/api.py)
takes the same names as keyword arguments (`use_cache=True` is `--use-cache`); both hand the
values to `RunConfig` building (config.py), which holds every check. A flag's keyword is its long
option with underscores for dashes, except where the original demo named it otherwise (`--topN`,
`--workspace-size`, `--drain-timeout`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from NNDF.base.errors import UsageError

PREBUILT_GRAPHS = ("decoder", "encoder", "cache_generator")


@dataclass(frozen=True)
class Flag:
    name: str                           # the keyword, and argparse's dest
    kind: type = str                    # bool is an on/off switch
    default: Any = None
    help: str | None = None
    group: str = "model"
    options: tuple[str, ...] = ()       # option strings; default: --name-with-dashes
    many: bool = False                  # takes one or more values (nargs="+")
    choices: tuple[str, ...] | None = None
    metavar: str | None = None

    @property
    def option_strings(self) -> tuple[str, ...]:
        return self.options or ("--" + self.name.replace("_", "-"),)

    @property
    def long_option(self) -> str:
        return max(self.option_strings, key=len)


def _prebuilt() -> list[Flag]:
    flags = []
    for graph in PREBUILT_GRAPHS:
        flags += [Flag(f"{graph}_onnx", Path, group="TensorRT", help=f"use this {graph} ONNX file instead of exporting"),
                  Flag(f"{graph}_engine", Path, group="TensorRT", help=f"use this prebuilt {graph} engine")]
    return flags


FLAGS: tuple[Flag, ...] = (
    # model
    Flag("variant", options=("--variant", "-m"),
         help="variant name (see --info); default: the family's tiny offline variant"),
    Flag("working_dir", default="./temp", options=("--working-dir", "-wd"), help="where ONNX files and engines are cached"),
    Flag("torch_dir", Path, help="load a local HuggingFace checkpoint (config.json, weights, tokenizer)"),
    Flag("random_weights", bool, False, "real architecture of --variant with seeded random weights (offline)"),
    Flag("seed", int, 0),
    Flag("fp16", bool, False, "export and run a half-precision graph (and halve the PyTorch model on CUDA)"),
    Flag("cpu", bool, False, "run frameworks and onnxrt on the CPU even where a CUDA GPU is available"),
    Flag("require_cuda", bool, False, "frameworks and onnxrt must run on CUDA: refuse in one line instead of "
         "running on the CPU (e.g. when ONNX Runtime's CUDA provider cannot start)"),
    Flag("cleanup", bool, False, "delete this variant's cached ONNX files and engines first"),
    Flag("info", bool, False, "print the variant's architecture and artifact paths"),
    Flag("verify", bool, False, "check every cached file's SHA-256 (by default only files whose size or mtime changed)"),
    Flag("verbose", bool, False, options=("--verbose", "-v")),
    # quantization
    Flag("quantize", group="quantization (weight-only, onnxrt and trt)", metavar="{int8,int4}",
         help="quantize every MatMul/Gemm weight (LM head included) symmetrically per block"),
    Flag("quant_block_size", int, None, "weights per scale, a power of two >= 16 (default 32; 64 with trt, which "
         "takes 64 or 128, and for LLAMA's onnxrt decoder written from the weights)", "quantization (weight-only, onnxrt and trt)"),
    Flag("quant_accuracy_level", int, 4, "ONNX Runtime MatMulNBits accuracy level: 0 unset, 1 fp32, 2 fp16, 3 bf16, "
         "4 int8 (default)", "quantization (weight-only, onnxrt and trt)"),
    # generation
    Flag("batch_size", int, 1, group="generation", options=("--batch-size", "-b")),
    Flag("use_cache", bool, False, "use the KV cache (past key/values); --enable-kv-cache is the demo's old name",
         "generation", options=("--use-cache", "-kv", "--enable-kv-cache")),
    Flag("num_beams", int, 1, group="generation", options=("--num-beams", "-nb")),
    Flag("use_mask", bool, False, "pad batched prompts on the left and pass an attention mask", "generation"),
    Flag("input_seq_len", int, None, "benchmark: prompt length (encoders: tokens per row); default 128, or what "
         "fits a model with fewer positions", "generation"),
    Flag("batch_sweep", group="generation", metavar="B1,B2,...",
         help="benchmark, encoder families: also time these batch sizes (e.g. 1,8,32), samples/s per size"),
    Flag("output_seq_len", int, None, "new tokens to generate (benchmark: exactly this many; default 64, or what "
         "fits a model with fewer positions)", "generation"),
    Flag("min_output_len", int, 0, "new tokens to generate before EOS may stop a sequence", "generation"),
    Flag("n_positions", int, None, "benchmark: give the model this many positions (added position rows are seeded "
         "random), for inputs longer than it was trained on, as the demo allowed", "generation"),
    # sampling
    Flag("do_sample", bool, False, "sample the next token instead of taking the most likely", "sampling"),
    Flag("temperature", float, None, "divide the scores by this before sampling (default 1.0)", "sampling"),
    Flag("top_k", int, None, "sample among the k most likely tokens; 0 for all (default 50)", "sampling"),
    Flag("top_p", float, None, "sample among the most likely tokens whose probabilities add up to p (default 1.0)",
         "sampling"),
    Flag("repetition_penalty", float, 1.0, "make tokens already in the text less likely (> 1); also applies without "
         "--do-sample", "sampling"),
    # accuracy
    Flag("num_samples", int, 20, group="accuracy"),
    Flag("tokens_to_generate", int, 5, group="accuracy"),
    Flag("top_n", int, 2, group="accuracy", options=("--topN",)),
    Flag("dataset_path", Path, None, "local JSONL file: LAMBADA's {\"text\": ...} per line; encoder families take their "
         "task's fields (see README, Encoders)", "accuracy"),
    # run / compare / chat
    Flag("checkpoint", Path, None, "a checkpoint.toml of your own examples", "run / compare / chat"),
    Flag("compare", many=True, group="run / compare / chat", options=("--compare", "-c"), metavar="BACKEND",
         help="the backends to compare (chat, compare), as the demo took them; or list them after the family"),
    Flag("image", Path, None, "image file for image-to-text families", "run / compare / chat"),
    Flag("save_output_fpath", options=("--save-output-fpath", "-o"), group="run / compare / chat",
         help="write the result as JSON here"),
    # timing
    Flag("iterations", int, 10, group="timing"),
    Flag("number", int, 1, group="timing"),
    Flag("warmup", int, 3, group="timing"),
    Flag("duration", float, 0.0, group="timing"),
    Flag("percentile", int, (50,), group="timing", many=True),
    # TensorRT
    Flag("dynamic_batch", bool, False, group="TensorRT"),
    Flag("min_dynamic_batch", int, None, group="TensorRT"),
    Flag("max_dynamic_batch", int, None, group="TensorRT"),
    Flag("input_profile_max_len", int, None, group="TensorRT"),
    Flag("output_profile_max_len", int, None, group="TensorRT"),
    Flag("disable_preview_dynamic_shapes", bool, False, "accepted for the original demo's scripts; no effect: TensorRT 10 "
         "keeps its dynamic-shapes preview (PROFILE_SHARING_0806) always on, 11 has none", "TensorRT"),
    Flag("tf32", bool, False, "let fp32 engines use TF32 math (faster; not bit-comparable with fp32 PyTorch)", "TensorRT"),
    Flag("use_timing_cache", bool, False, group="TensorRT"),
    Flag("workspace_size", int, None, "builder memory pool limit in MiB", "TensorRT"),
    Flag("use_cuda_graph", bool, False, "replay each step shape seen before as a CUDA graph (pays off over repeated runs)",
         "TensorRT"),
    Flag("nvtx_verbose", bool, False, group="TensorRT"),
    Flag("engine_postfix", str, "", group="TensorRT"),
    *_prebuilt(),
    # serving: both servers
    Flag("api", str, None, "serve: openai (default; OpenAI-compatible HTTP with continuous batching) or triton "
         "(KServe v2 through Triton Inference Server)", "serve", choices=("openai", "triton")),
    Flag("host", str, "127.0.0.1", "serve: address to listen on (0.0.0.0 exposes the server to the network)", "serve"),
    Flag("max_batch_size", int, 16, "serve, export-triton: most requests generated together (openai: rows decoding at "
         "once)", "serve"),
    Flag("drain_timeout", int, 25, "serve: seconds SIGTERM waits for in-flight requests (triton: at most 28)", "serve"),
    # serving: the OpenAI-compatible server
    Flag("port", int, None, "serve --api openai: the HTTP port (default 8000)", "serve"),
    Flag("served_model_name", str, None, "serve --api openai: the model id clients name (default: the variant)", "serve"),
    Flag("max_queue", int, None, "serve --api openai: most requests waiting for a row; beyond it HTTP 503 "
         "(default 64)", "serve"),
    Flag("api_key", str, None, "serve --api openai: require `Authorization: Bearer KEY` on /v1 endpoints", "serve"),
    Flag("max_prefill_tokens", int, None, "serve --api openai: most prompt tokens prefilled between two decode "
         "steps (a longer prompt is prefilled alone; default 256)", "serve"),
    Flag("max_request_bytes", int, None, "serve --api openai: largest request body accepted; beyond it HTTP 413 "
         "(default 4 MiB)", "serve"),
    Flag("chat_template", Path, None, "a Jinja chat template file for chat and serve --api openai (sets or overrides "
         "the tokenizer's own)", "run / compare / chat"),
    # serving: Triton
    Flag("http_port", int, None, "serve --api triton: HTTP port (default 8000)", "serve / export-triton"),
    Flag("grpc_port", int, None, "serve --api triton: gRPC port (default 8001)", "serve / export-triton"),
    Flag("metrics_port", int, None, "serve --api triton: metrics port (default 8002)", "serve / export-triton"),
    Flag("max_queue_delay_ms", float, None, "triton: how long the dynamic batcher may hold a request to fill "
         "a batch (default 5)", "serve / export-triton"),
    Flag("instances", int, None, "triton: model instances (export-triton: per GPU; default 1)", "serve / export-triton"),
    Flag("output", Path, None, "export-triton: the model repository folder to write", "serve / export-triton"),
    Flag("backend", str, None, "export-triton: which graphs the repository holds", "serve / export-triton",
         choices=("onnxrt", "trt")),
)

BY_NAME = {f.name: f for f in FLAGS}


def defaults() -> dict[str, Any]:
    return {f.name: f.default for f in FLAGS}


def typed(name: str, value: Any) -> Any:
    """A keyword argument's value as the command line would have parsed it, or one UsageError line:
    the API's values go through the same conversion as typed ones (`batch_size="2"` is 2)."""
    flag = BY_NAME.get(name)
    if flag is None:
        close = difflib.get_close_matches(name, list(BY_NAME), n=1)
        raise UsageError(f"unknown keyword argument {name}=", f"did you mean {close[0]}=?" if close else
                         "use run.py's flag names with underscores for dashes, e.g. use_cache=True for --use-cache")
    if value is None:
        return flag.default
    if flag.kind is bool:
        if not isinstance(value, bool):
            raise UsageError(f"{name}= takes True or False, got {value!r}")
        return value
    if flag.many:
        values = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_one(flag, v) for v in values)
    return _one(flag, value)


def _one(flag: Flag, value: Any) -> Any:
    if flag.kind in (int, float) and isinstance(value, bool):
        raise UsageError(f"bad command line: argument {flag.long_option}: invalid {flag.kind.__name__} value: '{value}'",
                         "see `python run.py --help`")
    try:
        converted = flag.kind(value) if not (flag.kind is int and isinstance(value, float)) else _exact_int(value)
    except (TypeError, ValueError):
        raise UsageError(f"bad command line: argument {flag.long_option}: invalid {flag.kind.__name__} value: "
                         f"'{value}'", "see `python run.py --help`") from None
    if flag.choices and converted not in flag.choices:
        raise UsageError(f"bad command line: argument {flag.long_option}: invalid choice: '{value}' (choose from "
                         f"{', '.join(repr(c) for c in flag.choices)})", "see `python run.py --help`")
    return converted


def _exact_int(value: float) -> int:
    if not float(value).is_integer():
        raise ValueError(value)
    return int(value)
