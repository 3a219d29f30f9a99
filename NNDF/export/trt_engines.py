"""TensorRT engines: cached builds from an ONNX graph and its optimization profiles (NNDF/runtime/trt_profiles.py).

An engine only runs on the GPU model and TensorRT version it was built with,
for the exact ONNX bytes, precision, profile and build flags it was built
from. All of these form its cache key; the GPU and the TensorRT version are in
its directory name too, so engines for several machines can share a working
dir:

    <workdir>/<family>/<variant>/engines/<gpu>-sm86-trt11.4/decoder-fp16-<hash>/engine.plan

Builds go through `WorkingDir.build` (atomic rename, manifest with the key and
file sizes, cross-process lock). An engine whose manifest or size does not
match is deleted and rebuilt, never loaded.

Precision comes from the ONNX graph on every supported TensorRT: 11 networks
are always strongly typed, and on 10 an fp16 graph is parsed into a strongly
typed network, so `BuilderFlag.FP16` (gone in 11) is never needed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from pathlib import Path

import onnx

from NNDF.base.config import TrtSettings
from NNDF.base.errors import UsageError
from NNDF.base.hashing import stable_hash
from NNDF.base.progress import status
from NNDF.export.workdir import WorkingDir, recorded_digest
from NNDF.graphs.spec import GraphSpec, check_onnx_io
from NNDF.runtime import trt_env
from NNDF.runtime.trt_profiles import Profile, as_profiles, input_profile

log = logging.getLogger(__name__)

ENGINE_FILE = "engine.plan"
TIMING_CACHE_FILE = "timing.cache"
BUILDER_VERSION = 2          # bump when this file changes what an engine contains (2: TF32 off by default)

# --------------------------------------------------------------------------- cache keys and paths
def model_and_data_files(onnx_path: Path) -> list[Path]:
    """The ONNX file and the external data files its initializers point at."""
    proto = onnx.load(str(onnx_path), load_external_data=False)
    locations = {entry.value for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
                 for entry in t.external_data if entry.key == "location"}
    return [onnx_path] + [onnx_path.parent / loc for loc in sorted(locations)]


def engine_key(onnx_path: Path, ranges: Profile | tuple[Profile, ...], settings: TrtSettings, fp16: bool,
               device: dict, trt_version: str) -> dict:
    return {
        "builder": BUILDER_VERSION,
        "device": {"name": device["name"], "compute_capability": device["compute_capability"]},
        "tensorrt": trt_version,
        # the digests an export recorded, while the files' size and mtime are unchanged (no re-hash of GBs)
        "onnx": {f.name: recorded_digest(f) for f in model_and_data_files(onnx_path)},
        "precision": "fp16" if fp16 else "fp32",
        "profiles": [{axis: list(r) for axis, r in sorted(p.items())} for p in as_profiles(ranges)],
        # --disable-preview-dynamic-shapes changes nothing in an engine (see _configure), so it is not here
        "flags": {"workspace_mib": settings.workspace_mib, "tf32": settings.tf32,
                  "timing_cache": settings.use_timing_cache, "nvtx_verbose": settings.nvtx_verbose,
                  "engine_postfix": settings.engine_postfix},
    }


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.") or "x"


def device_dirname(device: dict, trt_version: str) -> str:
    """e.g. nvidia-geforce-rtx-3090-sm86-trt11.4"""
    sm = device["compute_capability"].replace(".", "")
    return f"{_slug(device['name'])}-sm{sm}-trt{'.'.join(trt_version.split('.')[:2])}"


def engine_dirname(graph: str, fp16: bool, postfix: str, key: dict) -> str:
    parts = [graph, "fp16" if fp16 else "fp32"] + ([_slug(postfix)] if postfix else []) + [stable_hash(key)]
    return "-".join(parts)


# --------------------------------------------------------------------------- building
def engine_for(onnx_path: Path, spec: GraphSpec, ranges: Profile | tuple[Profile, ...], settings: TrtSettings,
               fp16: bool, workdir: WorkingDir, subdir: tuple[str, ...]) -> Path:
    """The cached engine for this ONNX file and build, building it if absent or unusable."""
    trt = trt_env.require_tensorrt()
    onnx_path = Path(onnx_path)
    check_onnx_io(onnx_path, spec)      # a wrong or unreadable file fails here, in one line
    device, version = trt_env.device_identity(), trt_env.trt_version()
    key = engine_key(onnx_path, ranges, settings, fp16, device, version)
    engines = workdir.artifact_dir(*subdir, "engines", device_dirname(device, version))
    path = engines / engine_dirname(spec.name, fp16, settings.engine_postfix, key)
    _discard_if_stale(path, key)

    def produce(tmp: Path) -> dict:
        plan = build_plan(trt, onnx_path, spec, ranges, settings, fp16, engines / TIMING_CACHE_FILE)
        (tmp / ENGINE_FILE).write_bytes(plan)
        return {"graph": spec.name, "onnx": str(onnx_path)}

    return workdir.build(path, key, (ENGINE_FILE,), produce).file(ENGINE_FILE)


def _stale(path: Path, key: dict) -> bool:
    if not path.exists():
        return False
    try:
        WorkingDir.load(path, key, (ENGINE_FILE,))
        return False
    except UsageError:
        return True


def _discard_if_stale(path: Path, key: dict) -> None:
    """Move aside an engine dir whose manifest or file size does not match, so it is rebuilt."""
    if not _stale(path, key):
        return
    with WorkingDir.lock(path):
        if _stale(path, key):   # another process may have replaced it meanwhile
            log.warning("rebuilding %s: its manifest does not match this build or the engine is truncated", path)
            trash = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex[:8]}")
            os.replace(path, trash)   # atomic: no reader ever sees a half-deleted engine
            shutil.rmtree(trash, ignore_errors=True)


def build_plan(trt, onnx_path: Path, spec: GraphSpec, ranges: Profile | tuple[Profile, ...], settings: TrtSettings,
               fp16: bool, timing_cache: Path) -> bytes:
    """Parse the ONNX file and build a serialized engine with the given optimization profiles."""
    logger = trt_env.logger_for(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, fp16 or _has_qdq(onnx_path)))
    parser = trt.OnnxParser(network, logger)
    _parse(parser, onnx_path)
    config = builder.create_builder_config()
    _configure(trt, config, settings)
    for profile in as_profiles(ranges):
        _add_profile(builder, network, config, spec, profile)
    if settings.use_timing_cache:
        _attach_timing_cache(config, timing_cache)
    with status(f"building TensorRT engine for {spec.name} ({'fp16' if fp16 else 'fp32'}), this can take minutes"):
        plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise UsageError(f"TensorRT could not build an engine from {onnx_path} (its log above says why)",
                         "raise --workspace-size, or check that the ONNX file is supported")
    if settings.use_timing_cache:
        _save_timing_cache(config, timing_cache)
    return bytes(plan)


def _add_profile(builder, network, config, spec: GraphSpec, ranges: Profile) -> None:
    """One optimization profile with the shapes of every input that has dynamic dims (profiles are
    numbered in the order they are added: the runner selects them by index)."""
    profile = builder.create_optimization_profile()
    dynamic = 0
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shapes = input_profile(tensor.name, tuple(tensor.shape), spec.inputs[tensor.name], ranges)
        if shapes is not None:
            profile.set_shape(tensor.name, *shapes)
            dynamic += 1
    if dynamic and config.add_optimization_profile(profile) < 0:
        raise RuntimeError(f"TensorRT rejected the optimization profile {ranges} for {spec.name}; see its log above")


def _network_flags(trt, strongly_typed: bool) -> int:
    # TensorRT 11 ignores the flag (every network is strongly typed); on 10 it makes an fp16
    # graph's types binding instead of hints, which is what 11 does.
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0


def _has_qdq(onnx_path: Path) -> bool:
    """A --quantize graph (DequantizeLinear weights): TensorRT's docs build explicit quantization
    strongly typed, so on 10 it is too (11 always is)."""
    proto = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node)


def _parse(parser, onnx_path: Path) -> None:
    # parse_from_file (not parse(bytes)) so external weight files resolve next to the model
    if parser.parse_from_file(str(onnx_path)):
        return
    errors = [parser.get_error(i) for i in range(parser.num_errors)]
    detail = "the parser gave no reason"
    if errors:
        first = errors[0]
        node = f" at node {first.node_name()} ({first.node_operator()})" if first.node_name() else ""
        detail = first.desc() + node
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    raise UsageError(f"TensorRT cannot parse {onnx_path}: {' '.join(detail.split())[:300]}{more}",
                     "re-export it (delete it or run with --cleanup) or pass a supported ONNX file")


def _configure(trt, config, settings: TrtSettings) -> None:
    if settings.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    if settings.nvtx_verbose:
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if not settings.tf32:
        # TensorRT enables TF32 by default: fp32 matmuls then round inputs to 10 mantissa bits, which
        # moves logits by ~1e-3, the size of the tiny models' top-2 gaps. Off unless --tf32 asks for it,
        # so an fp32 engine gives fp32 PyTorch's tokens. (fp16 graphs are unaffected: strongly typed.)
        config.clear_flag(trt.BuilderFlag.TF32)
    # --disable-preview-dynamic-shapes is deliberately not applied: it meant 8.6's
    # FASTER_DYNAMIC_SHAPES_0805, which 10 made permanent; 10's PROFILE_SHARING_0806 is deprecated
    # and always on whatever is set, and 11 has neither. The flag is accepted for the demo's scripts.


def _attach_timing_cache(config, path: Path) -> None:
    blob = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(blob)
    if cache is None or not config.set_timing_cache(cache, False):
        log.warning("ignoring the timing cache %s: it is unreadable or from another GPU/TensorRT", path)
        config.set_timing_cache(config.create_timing_cache(b""), False)


def _save_timing_cache(config, path: Path) -> None:
    """Merge this build's timings into the file: concurrent builds must not drop each other's."""
    with WorkingDir.lock(path):
        cache = config.get_timing_cache()
        if path.is_file():
            on_disk = config.create_timing_cache(path.read_bytes())
            if on_disk is not None:
                cache.combine(on_disk, False)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_bytes(bytes(cache.serialize()))
        os.replace(tmp, path)
