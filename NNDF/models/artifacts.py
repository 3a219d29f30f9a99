"""A loaded model's graphs on disk: where a variant's artifacts live, and the ONNX file a compiled
backend (onnxrt, trt) runs for one GraphSpec (the user's prebuilt file, or the cached export,
quantized under --quantize)."""

from __future__ import annotations

from pathlib import Path

import torch

from NNDF.base.config import RunConfig
from NNDF.base.errors import UsageError
from NNDF.export.onnx_export import MODEL_FILE, exported
from NNDF.export.quantize import check_block_fits, quantized_graph
from NNDF.export.workdir import WorkingDir
from NNDF.graphs.spec import GraphSpec, check_onnx_io
from NNDF.models.family import LoadedModel, ModelFamily
from NNDF.runtime.memory import linear_weight_shapes
from NNDF.runtime.ort_session import OrtSession


def artifact_subdir(family: ModelFamily, loaded: LoadedModel) -> tuple[str, ...]:
    return (family.name, loaded.variant.replace("/", "--"))


def onnx_path(spec: GraphSpec, loaded: LoadedModel, family: ModelFamily, cfg: RunConfig, workdir: WorkingDir,
              form: str = "onnxrt") -> Path:
    """The graph the `form` backend (onnxrt or trt) runs: the user's prebuilt --<graph>-onnx if given
    (checked against the runner's IO), else the cached export; under --quantize, its quantized form."""
    graph_kind = spec.name.removesuffix("_nocache")  # "decoder_nocache" is given as --decoder-onnx too
    given = cfg.trt.prebuilt_onnx.get(graph_kind)
    subdir = artifact_subdir(family, loaded)
    if given is not None:
        check_onnx_io(given, spec)
        source = given
    else:
        first = next(loaded.model.parameters())
        if first.device.type != "cpu" or first.dtype != torch.float32:
            raise UsageError(f"export traces the host fp32 model, but it is now {first.dtype} on {first.device}",
                             "make the compiled backends before running frameworks on the GPU (run.py does)")
        if cfg.quantize is not None:   # a block larger than a weight's input dimension fails before export
            check_block_fits(linear_weight_shapes(loaded.model), cfg.quantize.block_size, loaded.variant)
        source = exported(workdir, subdir, loaded.model, spec, loaded.source_key, cfg.fp16).file(MODEL_FILE)
    return quantized_graph(source, cfg.quantize, form, workdir, workdir.artifact_dir(*subdir, "onnx"))


def graph_sizes(workdir: WorkingDir, subdir: tuple[str, ...]) -> list[tuple[str, int]]:
    """(artifact name, bytes of its files) of every finished ONNX graph of a variant: the exports and
    their fused and quantized forms, from their manifests."""
    import json

    from NNDF.export.workdir import MANIFEST

    onnx_dir = workdir.artifact_dir(*subdir, "onnx")
    found = []
    for manifest in sorted(onnx_dir.glob(f"*/{MANIFEST}")) if onnx_dir.is_dir() else []:
        try:
            files = json.loads(manifest.read_text()).get("files", {})
        except (OSError, ValueError):
            continue
        found.append((manifest.parent.name, artifact_bytes(files)))
    return found


def artifact_bytes(files: dict) -> int:
    """Total size of a manifest's "files" (name -> {"size", "mtime_ns", "sha256"}, or a plain size)."""
    return sum(r["size"] if isinstance(r, dict) else int(r) for r in files.values())


# --------------------------------------------------------------------------- sessions of a run's graphs
def graph_paths(family, loaded, cfg: RunConfig, workdir: WorkingDir, specs: dict[str, GraphSpec],
                form: str = "onnxrt") -> dict[str, Path]:
    """Graph name -> the ONNX file the `form` backend (onnxrt, trt) runs for it (exported or reused)."""
    return {name: onnx_path(spec, loaded, family, cfg, workdir, form) for name, spec in specs.items()}


def ort_sessions(family, loaded, cfg: RunConfig, workdir: WorkingDir, specs: dict[str, GraphSpec]) -> dict:
    return {name: OrtSession(path, allow_cuda=not cfg.cpu, require_cuda=cfg.require_cuda)
            for name, path in graph_paths(family, loaded, cfg, workdir, specs).items()}


def prebuilt_engines(cfg, graphs) -> dict:
    """A model's engines come as a set: a mix of prebuilt and rebuilt engines could disagree."""
    given = {g: p for g, p in cfg.trt.prebuilt_engines.items()}
    wanted = {g.split("_nocache")[0] for g in graphs}
    if given and set(given) != wanted:
        missing = sorted(wanted - set(given))
        flags = " ".join(f"--{g.replace('_', '-')}-engine" for g in missing)
        raise UsageError(f"prebuilt engines must be given together; missing {flags}", "pass all of them or none")
    return {g: given[g.split("_nocache")[0]] for g in graphs} if given else {}


def trt_sessions(family, loaded, cfg, workdir, specs: dict, ranges: dict) -> dict:
    """A TensorRT session per graph: the user's prebuilt engines, or engines built (or reused)
    from the exported graphs."""
    from NNDF.export.trt_engines import engine_for
    from NNDF.runtime.trt_session import TrtSession

    engines = prebuilt_engines(cfg, specs)
    if not engines:
        sources = graph_paths(family, loaded, cfg, workdir, specs, form="trt")
        engines = {name: engine_for(sources[name], spec, ranges[name], cfg.trt, cfg.fp16, workdir,
                                    artifact_subdir(family, loaded))
                   for name, spec in specs.items()}
    return {name: TrtSession(engines[name], spec, ranges[name], cfg.trt) for name, spec in specs.items()}
