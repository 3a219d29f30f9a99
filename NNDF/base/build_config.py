"""Flags -> a validated RunConfig: every check that can be made before any model is loaded, in one
place, so a mistake costs the user a second, not an export. The command line and the Python API
both build their configs here, so they refuse the same input with the same one-line UsageError.

`flags` holds every flag of NNDF/base/flags.py by name (missing ones take their defaults), plus the
positional `action`, `family` and `backends`; `actions` maps each action's name to its rules.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from NNDF.base.config import (DEFAULT_BLOCK_SIZE, DEFAULT_INPUT_SEQ_LEN, TRT_INT4_BLOCK_SIZES, ActionRules, GenerationSettings, QuantSettings,
                              RunConfig, ServeSettings, TimingSettings, TrtSettings)
from NNDF.base.errors import UsageError
from NNDF.base.flags import BY_NAME, PREBUILT_GRAPHS, defaults

BACKENDS = ("frameworks", "onnxrt", "trt")
QUANT_SCHEMES = ("int8", "int4")


def build_config(flags: Mapping[str, Any], actions: Mapping[str, ActionRules]) -> RunConfig:
    a = _Flags({**defaults(), "family": None, "backends": (), **flags})
    rules = actions[a.action]
    if not rules.needs_family:
        check_output_path(a.save_output_fpath)
        return RunConfig(action=a.action, family=a.family or "", backends=(), variant="",
                         working_dir=Path(a.working_dir), save_output_fpath=_path(a.save_output_fpath),
                         verbose=a.verbose)
    if a.family is None:
        raise UsageError(f"the {a.action} action needs a model family", "e.g. `python run.py list` shows them")
    backends = _backends(a)
    for b in backends:
        if b not in BACKENDS:
            raise UsageError(f"unknown backend '{b}'", f"choose from {', '.join(BACKENDS)}")
    if len(set(backends)) != len(backends):
        raise UsageError(f"backend listed twice in {' '.join(backends)}")
    serve, backends = _serve_settings(a, rules, backends, actions)
    _check_ranges(a)
    if a.cpu and a.require_cuda:
        raise UsageError("--cpu and --require-cuda contradict each other", "pass only one")
    if a.torch_dir is not None and a.random_weights:
        raise UsageError("--torch-dir and --random-weights contradict each other", "pass only one")
    if a.torch_dir is not None and not (Path(a.torch_dir) / "config.json").is_file():
        raise UsageError(f"--torch-dir {a.torch_dir} has no config.json",
                         "point it at a HuggingFace checkpoint folder (config.json, weights, tokenizer files)")
    trt = _trt_settings(a, backends)
    if rules.name == "serve" and serve.api == "openai" and "trt" in backends:
        trt = _openai_trt_batch(trt, serve)
    default_new = a.tokens_to_generate if rules.default_new_tokens == "tokens_to_generate" else rules.default_new_tokens
    max_new = a.output_seq_len if a.output_seq_len is not None else default_new
    if a.min_output_len > max_new:
        raise UsageError(f"--min-output-len {a.min_output_len} exceeds the {max_new} new tokens asked for")
    generation = GenerationSettings(
        max_new_tokens=max_new,
        min_new_tokens=max_new if rules.exact_new_tokens else a.min_output_len,
        num_beams=a.num_beams,
        use_cache=a.use_cache,
        **_sampling_settings(a),
    )
    timing = TimingSettings(a.iterations, a.number, a.warmup, a.duration, tuple(a.percentile))
    quantize = _quant_settings(a, backends)
    if quantize is not None and rules.fp32_reference and "frameworks" not in backends:
        backends = ("frameworks", *backends)   # the fp32 reference their delta is printed against
    _check_own_flags(a, rules, actions)
    check_output_path(a.save_output_fpath)   # a result we could not write must not cost a whole run
    return RunConfig(
        action=a.action, family=a.family, backends=backends, variant=a.variant or "",
        working_dir=Path(a.working_dir), torch_dir=_path(a.torch_dir), random_weights=a.random_weights, seed=a.seed,
        batch_size=a.batch_size, fp16=a.fp16, cpu=a.cpu, require_cuda=a.require_cuda, use_mask=a.use_mask, verbose=a.verbose, info=a.info,
        cleanup=a.cleanup, verify=a.verify, save_output_fpath=_path(a.save_output_fpath), generation=generation,
        timing=timing, trt=trt, input_seq_len=_or(a.input_seq_len, DEFAULT_INPUT_SEQ_LEN), num_samples=a.num_samples,
        default_lengths=tuple(n for n in ("input_seq_len", "output_seq_len") if getattr(a, n) is None),
        tokens_to_generate=a.tokens_to_generate, top_n=a.top_n, dataset_path=_path(a.dataset_path),
        checkpoint=_path(a.checkpoint), image=_path(a.image), n_positions=a.n_positions, serve=serve,
        quantize=quantize, batch_sweep=_batch_sweep(a.batch_sweep), chat_template=_path(a.chat_template),
    )


class _Flags:
    """The flags as attributes (a.batch_size), as argparse gave them before."""

    def __init__(self, values: dict):
        self.__dict__.update(values)


def _path(value) -> Path | None:
    return None if value is None else Path(value)


def _or(value, default):
    return default if value is None else value


def _option(name: str) -> str:
    return BY_NAME[name].long_option


def _positive(name: str, value: int | None, minimum: int = 1):
    if value is not None and value < minimum:
        raise UsageError(f"{name} must be at least {minimum}, got {value}")


def _check_ranges(a: _Flags) -> None:
    for name in ("batch_size", "num_beams", "iterations", "number", "num_samples", "tokens_to_generate",
                 "top_n", "input_seq_len", "output_seq_len", "min_dynamic_batch", "max_dynamic_batch",
                 "input_profile_max_len", "output_profile_max_len", "workspace_size"):
        _positive(_option(name), getattr(a, name))
    _positive("--warmup", a.warmup, 0)
    _positive("--min-output-len", a.min_output_len, 0)
    for pct in a.percentile:
        if not 0 <= pct <= 100:
            raise UsageError(f"--percentile must be within 0..100, got {pct}")
    if a.duration < 0:
        raise UsageError(f"--duration must not be negative, got {a.duration}")


def _backends(a: _Flags) -> tuple[str, ...]:
    """Positional backends or the demo's `--compare b1 b2`, never both (which one would be meant?)."""
    if a.backends and a.compare:
        raise UsageError(f"backends given twice: '{' '.join(a.backends)}' after the family and "
                         f"'--compare {' '.join(a.compare)}'", "list them in one place")
    return tuple(a.backends or a.compare or ()) or ("frameworks",)


def _check_own_flags(a: _Flags, rules: ActionRules, actions: Mapping[str, ActionRules]) -> None:
    """Flags that only some actions read, refused (naming those actions) by the others."""
    messages = {
        "checkpoint": lambda readers: f"--checkpoint is only read by the {readers} actions",
        "compare": lambda readers: f"--compare belongs to the {readers} actions, not {a.action}",
        "n_positions": lambda readers: f"--n-positions only applies to {readers}",
        "batch_sweep": lambda readers: f"--batch-sweep only applies to {readers}",
        "chat_template": lambda readers: f"--chat-template is read by the {readers} actions",
    }
    fixes = {"compare": "list the backends after the family instead", "chat_template": "drop it"}
    for name, message in messages.items():
        value = getattr(a, name)
        if value is None or name in rules.own_flags:
            continue
        readers = " and ".join(n for n, r in actions.items() if name in r.own_flags)
        raise UsageError(message(readers), fixes.get(name, f"drop it, or use the {readers} action"))
    _positive("--n-positions", a.n_positions)
    if a.chat_template is not None and not Path(a.chat_template).is_file():
        raise UsageError(f"--chat-template {a.chat_template} is not a file", "point it at a Jinja chat template")


# Flags that only one of serve's two servers reads, with their defaults there (None on the command line means
# "not given", so the other server can refuse them instead of ignoring them).
OPENAI_FLAGS = {"port": 8000, "served_model_name": None, "max_queue": 64, "api_key": None,
                "max_prefill_tokens": 256, "max_request_bytes": 4 << 20}
TRITON_FLAGS = {"http_port": 8000, "grpc_port": 8001, "metrics_port": 8002, "max_queue_delay_ms": 5.0, "instances": 1}
# Generation flags an OpenAI request sets for itself (refused on the command line rather than ignored)
PER_REQUEST = {"do_sample": False, "temperature": None, "top_k": None, "top_p": None, "repetition_penalty": 1.0,
               "num_beams": 1, "min_output_len": 0}


def _serve_settings(a: _Flags, rules: ActionRules, backends: tuple[str, ...],
                    actions: Mapping[str, ActionRules]) -> tuple[ServeSettings, tuple[str, ...]]:
    """Checks of the serving flags; export-triton names its backend with --backend, not positionally."""
    serving = rules.name == "serve"
    api = (a.api or "openai") if serving else "triton"
    if a.api is not None and not serving:
        raise UsageError(f"--api belongs to the serve action, not {a.action}")
    readers, ignored = (OPENAI_FLAGS, TRITON_FLAGS) if api == "openai" else (TRITON_FLAGS, OPENAI_FLAGS)
    given = [name for name in ignored if getattr(a, name) is not None]
    if serving and given:
        other = "triton" if api == "openai" else "openai"
        raise UsageError(f"{_option(given[0])} belongs to serve --api {other}, and this is serve --api {api}",
                         "drop it" + (" (the OpenAI server listens on --port)" if given[0] == "http_port" else "")
                         if api == "openai" else "drop it, or serve with --api openai")
    if serving and api == "triton" and a.chat_template is not None:
        raise UsageError("--chat-template applies to chat and serve --api openai", "drop it, or serve with --api openai")
    if serving and api == "openai":
        _check_per_request_flags(a)
    values = {name: (getattr(a, name) if getattr(a, name) is not None else default)
              for name, default in {**OPENAI_FLAGS, **TRITON_FLAGS}.items()}
    for name in ("http_port", "grpc_port", "metrics_port", "port"):
        if not 1 <= values[name] <= 65535:
            raise UsageError(f"{_option(name)} must be within 1..65535, got {values[name]}")
    ports = (values["http_port"], values["grpc_port"], values["metrics_port"])
    if serving and api == "triton" and len(set(ports)) != 3:
        raise UsageError(f"--http-port, --grpc-port and --metrics-port must differ, got {' '.join(map(str, ports))}")
    for name in ("max_batch_size", "instances", "max_queue", "max_prefill_tokens", "max_request_bytes"):
        _positive(_option(name), values.get(name, getattr(a, name, None)))
    if a.drain_timeout < 0:
        raise UsageError(f"--drain-timeout must not be negative, got {a.drain_timeout}")
    if api == "triton" and a.drain_timeout > 28:   # PyTriton kills the server 30 s after asking it to stop
        raise UsageError(f"--drain-timeout must be within 0..28 seconds with Triton, got {a.drain_timeout}")
    if values["max_queue_delay_ms"] < 0:
        raise UsageError(f"--max-queue-delay-ms must not be negative, got {values['max_queue_delay_ms']}")
    if values["served_model_name"] is not None and not values["served_model_name"].strip():
        raise UsageError("--served-model-name is empty", "name the model clients will ask for")
    if values["api_key"] is not None and not values["api_key"].strip():
        raise UsageError("--api-key is empty", "give the key clients send as `Authorization: Bearer KEY`")
    if rules.backends == "one" and len(backends) != 1:
        raise UsageError(f"{a.action} takes one backend, got {' '.join(backends)}", "list one of frameworks, onnxrt, trt")
    if rules.backends == "by --backend":
        if a.backends:
            raise UsageError(f"{a.action} takes its backend as --backend onnxrt|trt, not positionally")
        if a.output is None:
            raise UsageError(f"{a.action} needs --output DIR", "name the model repository folder to write")
        backends = (a.backend or "onnxrt",)
    elif a.output is not None or a.backend is not None:
        owner = " and ".join(n for n, r in actions.items() if r.backends == "by --backend")
        raise UsageError(f"--output and --backend belong to {owner}")
    if serving and api == "openai" and "trt" in backends and a.use_cuda_graph:
        raise UsageError("serve --api openai does not replay CUDA graphs: its batch changes shape at every step",
                         "drop --use-cuda-graph")
    settings = ServeSettings(api=api, host=a.host, max_batch_size=a.max_batch_size, drain_timeout_s=a.drain_timeout,
                             port=values["port"], served_model_name=values["served_model_name"],
                             max_queue=values["max_queue"], api_key=values["api_key"],
                             max_prefill_tokens=values["max_prefill_tokens"],
                             max_request_bytes=values["max_request_bytes"], http_port=values["http_port"],
                             grpc_port=values["grpc_port"], metrics_port=values["metrics_port"],
                             max_queue_delay_ms=values["max_queue_delay_ms"], instances=values["instances"],
                             output=_path(a.output), export_backend=backends[0])
    return settings, backends


def _check_per_request_flags(a: _Flags) -> None:
    """serve --api openai: each request chooses its own sampling and length; the flags would be ignored."""
    for name, default in PER_REQUEST.items():
        if getattr(a, name) != default:
            raise UsageError(f"{_option(name)} does not apply to serve --api openai: each request sets its own "
                             "(temperature, top_p, top_k, seed, repetition_penalty, max_tokens)", "drop it")


def _openai_trt_batch(trt: TrtSettings, serve: ServeSettings) -> TrtSettings:
    """serve --api openai on trt: the engine takes 1 to --max-batch-size rows (the batch grows and shrinks)."""
    rows = serve.max_batch_size
    if not trt.dynamic_batch:
        return replace(trt, dynamic_batch=True, min_dynamic_batch=1, max_dynamic_batch=rows)
    if trt.min_dynamic_batch != 1 or trt.max_dynamic_batch < rows:
        raise UsageError(f"serve --api openai runs 1 to --max-batch-size {rows} rows, but the engine's dynamic batch "
                         f"is {trt.min_dynamic_batch}..{trt.max_dynamic_batch}",
                         "drop --dynamic-batch (it is set for you) or widen --min/--max-dynamic-batch")
    return trt


def _trt_settings(a: _Flags, backends: tuple[str, ...]) -> TrtSettings:
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
    prebuilt_onnx = {g: Path(getattr(a, f"{g}_onnx")) for g in PREBUILT_GRAPHS if getattr(a, f"{g}_onnx")}
    prebuilt_engines = {g: Path(getattr(a, f"{g}_engine")) for g in PREBUILT_GRAPHS if getattr(a, f"{g}_engine")}
    for graph, path in {**prebuilt_onnx, **prebuilt_engines}.items():
        if not path.is_file():
            raise UsageError(f"prebuilt {graph} file {path} does not exist", "check the path")
    if prebuilt_engines and "trt" not in backends:
        raise UsageError("--*-engine files are only used by the trt backend", "add trt to the backends")
    return TrtSettings(
        dynamic_batch=a.dynamic_batch, min_dynamic_batch=lo, max_dynamic_batch=hi,
        input_profile_max_len=a.input_profile_max_len, output_profile_max_len=a.output_profile_max_len,
        disable_preview_dynamic_shapes=a.disable_preview_dynamic_shapes, tf32=a.tf32,
        use_timing_cache=a.use_timing_cache, workspace_mib=a.workspace_size, use_cuda_graph=a.use_cuda_graph,
        nvtx_verbose=a.nvtx_verbose, engine_postfix=a.engine_postfix, prebuilt_onnx=prebuilt_onnx,
        prebuilt_engines=prebuilt_engines,
    )


def _sampling_settings(a: _Flags) -> dict:
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


def _batch_sweep(text: str | None) -> tuple[int, ...]:
    """"1,8,32" -> (1, 8, 32), each a positive batch size."""
    if text is None:
        return ()
    try:
        sizes = tuple(int(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        raise UsageError(f"--batch-sweep {text} is not a comma-separated list of batch sizes", "e.g. --batch-sweep 1,8,32") from None
    if not sizes or min(sizes) < 1:
        raise UsageError(f"--batch-sweep {text} needs batch sizes of at least 1", "e.g. --batch-sweep 1,8,32")
    return tuple(dict.fromkeys(sizes))


def check_block_size(block_size: int) -> None:
    if block_size < 16 or block_size & (block_size - 1):
        raise UsageError(f"--quant-block-size {block_size} is not a power of two >= 16",
                         "use 16, 32, 64, 128, ...")


def _quant_settings(a: _Flags, backends: tuple[str, ...]) -> QuantSettings | None:
    if a.quantize is None:
        if a.quant_block_size is not None or a.quant_accuracy_level != 4:
            raise UsageError("--quant-block-size/--quant-accuracy-level need --quantize", "add --quantize int8 or int4")
        return None
    if a.quantize not in QUANT_SCHEMES:
        raise UsageError(f"--quantize {a.quantize} is not supported", "choose int8 or int4")
    # TensorRT's INT4 blocks are 64 or 128 weights, so a run with trt defaults to 64 (it fits every
    # weight of the tiny models but opt-tiny's and blip-tiny's, which trt refuses); onnxrt alone: 32, or
    # 64 where the decoder is written from the weights (NNDF/kinds/makers.py, default_block_size)
    block_size = a.quant_block_size
    if block_size is None:
        block_size = TRT_INT4_BLOCK_SIZES[0] if "trt" in backends else DEFAULT_BLOCK_SIZE
    check_block_size(block_size)
    if a.quant_accuracy_level not in range(5):
        raise UsageError(f"--quant-accuracy-level {a.quant_accuracy_level} is not one of 0-4",
                         "use 0 (unset), 1 (fp32), 2 (fp16), 3 (bf16) or 4 (int8)")
    if not set(backends) & {"onnxrt", "trt"}:
        raise UsageError("--quantize applies to the onnxrt and trt backends", "add onnxrt or trt to the backends")
    return QuantSettings(a.quantize, block_size, a.quant_accuracy_level, block_given=a.quant_block_size is not None)


def check_output_path(path: Path | str | None) -> None:
    """--save-output-fpath must be a file we can create or replace, checked now, not after the run."""
    if path is None:
        return
    if not str(path).strip():
        raise UsageError("--save-output-fpath is empty", "name a JSON file, e.g. --save-output-fpath result.json")
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--save-output-fpath {path} is a directory", "name a file inside it")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:   # save_json creates the missing folders
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--save-output-fpath {path} cannot be created: {existing} is a file, not a folder",
                         "choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".probe-writable-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UsageError(f"--save-output-fpath {path} cannot be written: {existing} is not writable ({e.strerror})",
                         "choose a writable path") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"--save-output-fpath {path} exists and is not writable", "choose another path")
