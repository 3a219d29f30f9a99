"""Command-line flags -> a validated RunConfig.

All checks that can be made before any model is loaded are made here, so a
mistake costs the user a second, not an export.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from NNDF.config import GenerationSettings, QuantSettings, RunConfig, ServeSettings, TimingSettings, TrtSettings
from NNDF.errors import UsageError
from NNDF.preflight import check_output_path

ACTIONS = ("accuracy", "benchmark", "chat", "run", "compare", "list", "serve", "export-triton")
BACKENDS = ("frameworks", "onnxrt", "trt")
PREBUILT_GRAPHS = ("decoder", "encoder", "cache_generator")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage and exit; we want one line
        if message.startswith("argument --compare/-c: expected"):
            raise UsageError("--compare needs the backends to compare after it", "e.g. --compare frameworks onnxrt")
        raise UsageError(f"bad command line: {message}", "see `python run.py --help`")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="run.py", description="Export HuggingFace models to ONNX / TensorRT, then measure and compare them.")
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("family", nargs="?", help="model family, e.g. GPT2, T5, BART (list: optional)")
    p.add_argument("backends", nargs="*", help=f"one or more of {', '.join(BACKENDS)} (default: frameworks)")

    g = p.add_argument_group("model")
    g.add_argument("--variant", "-m", help="variant name (see --info); default: the family's tiny offline variant")
    g.add_argument("--working-dir", "-wd", default="./temp", help="where ONNX files and engines are cached")
    g.add_argument("--torch-dir", type=Path, help="load a local HuggingFace checkpoint (config.json, weights, tokenizer)")
    g.add_argument("--random-weights", action="store_true", help="real architecture of --variant with seeded random weights (offline)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--fp16", action="store_true",
                   help="export and run a half-precision graph (and halve the PyTorch model on CUDA)")
    g.add_argument("--cpu", action="store_true",
                   help="run frameworks and onnxrt on the CPU even where a CUDA GPU is available")
    g.add_argument("--cleanup", action="store_true", help="delete this variant's cached ONNX files and engines first")
    g.add_argument("--info", action="store_true", help="print the variant's architecture and artifact paths")
    g.add_argument("--verify", action="store_true",
                   help="check every cached file's SHA-256 (by default only files whose size or mtime changed)")
    g.add_argument("--verbose", "-v", action="store_true")

    g = p.add_argument_group("quantization (weight-only, onnxrt and trt)")
    g.add_argument("--quantize", metavar="{int8,int4}",
                   help="quantize every MatMul/Gemm weight (LM head included) symmetrically per block")
    g.add_argument("--quant-block-size", type=int, default=32, help="weights per scale, a power of two >= 16")
    g.add_argument("--quant-accuracy-level", type=int, default=4,
                   help="ONNX Runtime MatMulNBits accuracy level: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 (default)")

    g = p.add_argument_group("generation")
    g.add_argument("--batch-size", "-b", type=int, default=1)
    g.add_argument("--use-cache", "-kv", "--enable-kv-cache", dest="use_cache", action="store_true",
                   help="use the KV cache (past key/values); --enable-kv-cache is the demo's old name")
    g.add_argument("--num-beams", "-nb", type=int, default=1)
    g.add_argument("--use-mask", action="store_true", help="pad batched prompts on the left and pass an attention mask")
    g.add_argument("--input-seq-len", type=int, default=128, help="benchmark: prompt length (encoders: tokens per row)")
    g.add_argument("--batch-sweep", metavar="B1,B2,...",
                   help="benchmark, encoder families: also time these batch sizes (e.g. 1,8,32), samples/s per size")
    g.add_argument("--output-seq-len", type=int, default=None, help="new tokens to generate (benchmark: exactly this many)")
    g.add_argument("--min-output-len", type=int, default=0, help="new tokens to generate before EOS may stop a sequence")
    g.add_argument("--n-positions", type=int,
                   help="benchmark: give the model this many positions (added position rows are seeded random), "
                        "for inputs longer than it was trained on, as the demo allowed")

    g = p.add_argument_group("sampling (HuggingFace's meaning; onnxrt and trt draw the same tokens for one --seed)")
    g.add_argument("--do-sample", action="store_true", help="sample the next token instead of taking the most likely")
    g.add_argument("--temperature", type=float, help="divide the scores by this before sampling (default 1.0)")
    g.add_argument("--top-k", type=int, help="sample among the k most likely tokens; 0 for all (default 50)")
    g.add_argument("--top-p", type=float, help="sample among the most likely tokens whose probabilities add up to p (default 1.0)")
    g.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="make tokens already in the text less likely (> 1); also applies without --do-sample")

    g = p.add_argument_group("accuracy")
    g.add_argument("--num-samples", type=int, default=20)
    g.add_argument("--tokens-to-generate", type=int, default=5)
    g.add_argument("--topN", dest="top_n", type=int, default=2)
    g.add_argument("--dataset-path", type=Path,
                   help="local JSONL file: LAMBADA's {\"text\": ...} per line; encoder families take their task's "
                        "fields (see README, Encoders)")

    g = p.add_argument_group("run / compare / chat")
    g.add_argument("--checkpoint", type=Path, help="a checkpoint.toml of your own examples")
    g.add_argument("--compare", "-c", nargs="+", metavar="BACKEND",
                   help="the backends to compare (chat, compare), as the demo took them; or list them after the family")
    g.add_argument("--image", type=Path, help="image file for image-to-text families")
    g.add_argument("--save-output-fpath", "-o", help="write the result as JSON here")

    g = p.add_argument_group("timing")
    g.add_argument("--iterations", type=int, default=10)
    g.add_argument("--number", type=int, default=1)
    g.add_argument("--warmup", type=int, default=3)
    g.add_argument("--duration", type=float, default=0.0)
    g.add_argument("--percentile", type=int, nargs="+", default=[50])

    g = p.add_argument_group("TensorRT")
    g.add_argument("--dynamic-batch", action="store_true")
    g.add_argument("--min-dynamic-batch", type=int)
    g.add_argument("--max-dynamic-batch", type=int)
    g.add_argument("--input-profile-max-len", type=int)
    g.add_argument("--output-profile-max-len", type=int)
    g.add_argument("--disable-preview-dynamic-shapes", action="store_true",
                   help="accepted for the original demo's scripts; no effect: TensorRT 10 keeps its dynamic-shapes "
                        "preview (PROFILE_SHARING_0806) always on, 11 has none")
    g.add_argument("--tf32", action="store_true",
                   help="let fp32 engines use TF32 math (faster; not bit-comparable with fp32 PyTorch)")
    g.add_argument("--use-timing-cache", action="store_true")
    g.add_argument("--workspace-size", type=int, help="builder memory pool limit in MiB")
    g.add_argument("--use-cuda-graph", action="store_true",
                   help="replay each step shape seen before as a CUDA graph (pays off over repeated runs)")
    g.add_argument("--nvtx-verbose", action="store_true")
    g.add_argument("--engine-postfix", default="")
    for graph in PREBUILT_GRAPHS:
        flag = graph.replace("_", "-")
        g.add_argument(f"--{flag}-onnx", type=Path, help=f"use this {graph} ONNX file instead of exporting")
        g.add_argument(f"--{flag}-engine", type=Path, help=f"use this prebuilt {graph} engine")
    _add_serving_flags(p)
    return p


def _add_serving_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("serve / export-triton (Triton Inference Server)")
    g.add_argument("--host", default="0.0.0.0", help="serve: address the HTTP, gRPC and metrics endpoints listen on")
    g.add_argument("--http-port", type=int, default=8000)
    g.add_argument("--grpc-port", type=int, default=8001)
    g.add_argument("--metrics-port", type=int, default=8002)
    g.add_argument("--max-batch-size", type=int, default=16, help="most requests generated together as one batch")
    g.add_argument("--max-queue-delay-ms", type=float, default=5.0,
                   help="how long the dynamic batcher may hold a request to fill a batch")
    g.add_argument("--instances", type=int, default=1, help="model instances (export-triton: per GPU)")
    g.add_argument("--drain-timeout", type=int, default=25, help="serve: seconds SIGTERM waits for in-flight requests (at most 28)")
    g.add_argument("--output", type=Path, help="export-triton: the model repository folder to write")
    g.add_argument("--backend", choices=("onnxrt", "trt"), help="export-triton: which graphs the repository holds")


def _serve_settings(a, backends: tuple[str, ...]) -> tuple[ServeSettings, tuple[str, ...]]:
    """Checks of the serving flags; export-triton names its backend with --backend, not positionally."""
    for name in ("http_port", "grpc_port", "metrics_port"):
        value = getattr(a, name)
        if not 1 <= value <= 65535:
            raise UsageError(f"--{name.replace('_', '-')} must be within 1..65535, got {value}")
    ports = (a.http_port, a.grpc_port, a.metrics_port)
    if a.action == "serve" and len(set(ports)) != 3:
        raise UsageError(f"--http-port, --grpc-port and --metrics-port must differ, got {' '.join(map(str, ports))}")
    _positive("--max-batch-size", a.max_batch_size)
    _positive("--instances", a.instances)
    if not 0 <= a.drain_timeout <= 28:   # PyTriton kills the server 30 s after asking it to stop
        raise UsageError(f"--drain-timeout must be within 0..28 seconds, got {a.drain_timeout}")
    if a.max_queue_delay_ms < 0:
        raise UsageError(f"--max-queue-delay-ms must not be negative, got {a.max_queue_delay_ms}")
    if a.action == "serve" and len(backends) != 1:
        raise UsageError(f"serve takes one backend, got {' '.join(backends)}", "list one of frameworks, onnxrt, trt")
    if a.action == "export-triton":
        if a.backends:
            raise UsageError("export-triton takes its backend as --backend onnxrt|trt, not positionally")
        if a.output is None:
            raise UsageError("export-triton needs --output DIR", "name the model repository folder to write")
        backends = (a.backend or "onnxrt",)
    elif a.output is not None or a.backend is not None:
        raise UsageError("--output and --backend belong to export-triton")
    settings = ServeSettings(host=a.host, http_port=a.http_port, grpc_port=a.grpc_port, metrics_port=a.metrics_port,
                             max_batch_size=a.max_batch_size, max_queue_delay_ms=a.max_queue_delay_ms,
                             instances=a.instances, drain_timeout_s=a.drain_timeout, output=a.output,
                             export_backend=backends[0])
    return settings, backends


def _positive(name: str, value: int | None, minimum: int = 1):
    if value is not None and value < minimum:
        raise UsageError(f"{name} must be at least {minimum}, got {value}")


def _backends(a: argparse.Namespace) -> tuple[str, ...]:
    """Positional backends or the demo's `--compare b1 b2`, never both (which one would be meant?)."""
    if a.backends and a.compare:
        raise UsageError(f"backends given twice: '{' '.join(a.backends)}' after the family and "
                         f"'--compare {' '.join(a.compare)}'", "list them in one place")
    return tuple(a.backends or a.compare or ()) or ("frameworks",)


def _sampling_settings(a: argparse.Namespace) -> dict:
    """GenerationSettings fields for sampling, refused in one line when out of range or
    meaningless (a sampling value without --do-sample is ignored by HF with a warning)."""
    given = [f"--{n.replace('_', '-')}" for n in ("temperature", "top_k", "top_p") if getattr(a, n) is not None]
    if given and not a.do_sample:
        raise UsageError(f"{', '.join(given)} only shape sampling", "add --do-sample (or drop them for greedy/beam search)")
    if a.temperature is not None and not a.temperature > 0:
        raise UsageError(f"--temperature must be greater than 0, got {a.temperature}",
                         "use a small value such as 0.1 for nearly greedy choices, or drop --do-sample")
    if a.top_k is not None and a.top_k < 0:
        raise UsageError(f"--top-k must be 0 (no limit) or more, got {a.top_k}")
    if a.top_p is not None and not 0 < a.top_p <= 1:
        raise UsageError(f"--top-p must be within (0, 1], got {a.top_p}")
    if not a.repetition_penalty > 0:
        raise UsageError(f"--repetition-penalty must be greater than 0, got {a.repetition_penalty}",
                         "1.0 means no penalty, above 1 discourages repeats")
    if a.do_sample and a.num_beams > 1:
        # HF would run beam sampling; our shared loop ports HF's deterministic beam search only,
        # and a seeded beam sample could not be checked against anything, so say so instead.
        raise UsageError("--do-sample with --num-beams above 1 (beam sampling) is not supported",
                         "sample with --num-beams 1, or drop --do-sample for beam search")
    chosen = {n: getattr(a, n) for n in ("temperature", "top_k", "top_p") if getattr(a, n) is not None}
    # the others keep GenerationSettings' defaults (HuggingFace's)
    return {"do_sample": a.do_sample, **chosen, "repetition_penalty": a.repetition_penalty, "seed": a.seed}


def parse_args(argv: list[str]) -> RunConfig:
    # intermixed: the demo's users write flags and backends in either order
    a = build_parser().parse_intermixed_args(argv)
    if a.action == "list":
        check_output_path(a.save_output_fpath)
        return RunConfig(action="list", family=a.family or "", backends=(), variant="", working_dir=Path(a.working_dir),
                         save_output_fpath=None if a.save_output_fpath is None else Path(a.save_output_fpath),
                         verbose=a.verbose)
    if a.family is None:
        raise UsageError(f"the {a.action} action needs a model family", "e.g. `python run.py list` shows them")
    backends = _backends(a)
    for b in backends:
        if b not in BACKENDS:
            raise UsageError(f"unknown backend '{b}'", f"choose from {', '.join(BACKENDS)}")
    if len(set(backends)) != len(backends):
        raise UsageError(f"backend listed twice in {' '.join(backends)}")
    serve, backends = _serve_settings(a, backends)

    for name in ("batch_size", "num_beams", "iterations", "number", "num_samples", "tokens_to_generate",
                 "top_n", "input_seq_len", "output_seq_len", "min_dynamic_batch", "max_dynamic_batch",
                 "input_profile_max_len", "output_profile_max_len", "workspace_size"):
        _positive("--" + name.replace("_", "-").replace("top-n", "topN"), getattr(a, name))
    _positive("--warmup", a.warmup, 0)
    _positive("--min-output-len", a.min_output_len, 0)
    for pct in a.percentile:
        if not 0 <= pct <= 100:
            raise UsageError(f"--percentile must be within 0..100, got {pct}")
    if a.duration < 0:
        raise UsageError(f"--duration must not be negative, got {a.duration}")
    if a.torch_dir is not None and a.random_weights:
        raise UsageError("--torch-dir and --random-weights contradict each other", "pass only one")
    if a.torch_dir is not None and not (a.torch_dir / "config.json").is_file():
        raise UsageError(f"--torch-dir {a.torch_dir} has no config.json",
                         "point it at a HuggingFace checkpoint folder (config.json, weights, tokenizer files)")

    if a.dynamic_batch:
        lo = a.min_dynamic_batch if a.min_dynamic_batch is not None else 1
        hi = a.max_dynamic_batch if a.max_dynamic_batch is not None else max(a.batch_size, lo)
        if lo > hi:
            raise UsageError(f"--min-dynamic-batch {lo} is larger than --max-dynamic-batch {hi}")
        if not lo <= a.batch_size <= hi:
            raise UsageError(f"--batch-size {a.batch_size} is outside the dynamic batch range [{lo}, {hi}]",
                             "change --batch-size or the --min/--max-dynamic-batch bounds")
    elif a.min_dynamic_batch is not None or a.max_dynamic_batch is not None:
        raise UsageError("--min-dynamic-batch/--max-dynamic-batch need --dynamic-batch")
    else:
        lo = hi = None

    prebuilt_onnx = {g: getattr(a, f"{g}_onnx") for g in PREBUILT_GRAPHS if getattr(a, f"{g}_onnx")}
    prebuilt_engines = {g: getattr(a, f"{g}_engine") for g in PREBUILT_GRAPHS if getattr(a, f"{g}_engine")}
    for graph, path in {**prebuilt_onnx, **prebuilt_engines}.items():
        if not path.is_file():
            raise UsageError(f"prebuilt {graph} file {path} does not exist", "check the path")
    if prebuilt_engines and "trt" not in backends:
        raise UsageError("--*-engine files are only used by the trt backend", "add trt to the backends")

    default_new = {"benchmark": 64, "accuracy": a.tokens_to_generate}.get(a.action, 32)
    max_new = a.output_seq_len if a.output_seq_len is not None else default_new
    if a.min_output_len > max_new:
        raise UsageError(f"--min-output-len {a.min_output_len} exceeds the {max_new} new tokens asked for")
    is_benchmark = a.action == "benchmark"
    generation = GenerationSettings(
        max_new_tokens=max_new,
        min_new_tokens=max_new if is_benchmark else a.min_output_len,
        num_beams=a.num_beams,
        use_cache=a.use_cache,
        **_sampling_settings(a),
    )
    timing = TimingSettings(a.iterations, a.number, a.warmup, a.duration, tuple(a.percentile))
    trt = TrtSettings(
        dynamic_batch=a.dynamic_batch, min_dynamic_batch=lo, max_dynamic_batch=hi,
        input_profile_max_len=a.input_profile_max_len, output_profile_max_len=a.output_profile_max_len,
        disable_preview_dynamic_shapes=a.disable_preview_dynamic_shapes, tf32=a.tf32,
        use_timing_cache=a.use_timing_cache,
        workspace_mib=a.workspace_size, use_cuda_graph=a.use_cuda_graph, nvtx_verbose=a.nvtx_verbose,
        engine_postfix=a.engine_postfix, prebuilt_onnx=prebuilt_onnx, prebuilt_engines=prebuilt_engines,
    )
    quantize = _quant_settings(a, backends)
    if quantize is not None and a.action in ("accuracy", "compare") and "frameworks" not in backends:
        backends = ("frameworks", *backends)   # the fp32 reference their delta is printed against
    if a.checkpoint is not None and a.action not in ("run", "compare"):
        raise UsageError("--checkpoint is only read by the run and compare actions")
    check_output_path(a.save_output_fpath)   # a result we could not write must not cost a whole run
    if a.compare and a.action not in ("chat", "compare"):
        raise UsageError(f"--compare belongs to the chat and compare actions, not {a.action}",
                         "list the backends after the family instead")
    if a.n_positions is not None:
        if a.action != "benchmark":
            raise UsageError("--n-positions only applies to benchmark", "drop it, or use the benchmark action")
        _positive("--n-positions", a.n_positions)
    batch_sweep = _batch_sweep(a.batch_sweep, a.action)
    return RunConfig(
        action=a.action, family=a.family, backends=backends, variant=a.variant or "",
        working_dir=Path(a.working_dir), torch_dir=a.torch_dir, random_weights=a.random_weights, seed=a.seed,
        batch_size=a.batch_size, fp16=a.fp16, cpu=a.cpu, use_mask=a.use_mask, verbose=a.verbose, info=a.info,
        cleanup=a.cleanup, verify=a.verify,
        save_output_fpath=None if a.save_output_fpath is None else Path(a.save_output_fpath), generation=generation, timing=timing, trt=trt,
        input_seq_len=a.input_seq_len, num_samples=a.num_samples, tokens_to_generate=a.tokens_to_generate,
        top_n=a.top_n, dataset_path=a.dataset_path, checkpoint=a.checkpoint, image=a.image,
        n_positions=a.n_positions, serve=serve, quantize=quantize,
        batch_sweep=batch_sweep,
    )


def _batch_sweep(text: str | None, action: str) -> tuple[int, ...]:
    """"1,8,32" -> (1, 8, 32), each a positive batch size."""
    if text is None:
        return ()
    if action != "benchmark":
        raise UsageError("--batch-sweep only applies to benchmark", "drop it, or use the benchmark action")
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"--batch-sweep {text} is not a comma-separated list of batch sizes", "e.g. --batch-sweep 1,8,32") from None
    if not sizes or min(sizes) < 1:
        raise UsageError(f"--batch-sweep {text} needs batch sizes of at least 1", "e.g. --batch-sweep 1,8,32")
    return tuple(dict.fromkeys(sizes))


def _quant_settings(a, backends: tuple[str, ...]) -> QuantSettings | None:
    from NNDF.quantize import check_block_size

    if a.quantize is None:
        if a.quant_block_size != 32 or a.quant_accuracy_level != 4:
            raise UsageError("--quant-block-size/--quant-accuracy-level need --quantize", "add --quantize int8 or int4")
        return None
    if a.quantize not in ("int8", "int4"):
        raise UsageError(f"--quantize {a.quantize} is not supported", "choose int8 or int4")
    check_block_size(a.quant_block_size)
    if a.quant_accuracy_level not in range(5):
        raise UsageError(f"--quant-accuracy-level {a.quant_accuracy_level} is not one of 0-4",
                         "use 0 (unset), 1 (fp32), 2 (fp16), 3 (bf16) or 4 (int8)")
    if not set(backends) & {"onnxrt", "trt"}:
        raise UsageError("--quantize applies to the onnxrt and trt backends", "add onnxrt or trt to the backends")
    for graph, path in ((g, getattr(a, f"{g}_onnx")) for g in PREBUILT_GRAPHS):
        if path is not None:
            from NNDF.quantize import check_not_quantized

            check_not_quantized(path)
    return QuantSettings(a.quantize, a.quant_block_size, a.quant_accuracy_level)
