"""From a validated RunConfig to ready backends: load the model once, export or
reuse graphs, open sessions. Families call these helpers from their thin
frameworks.py / onnxrt.py / trt.py files."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from NNDF.backends import Backend
from NNDF.config import RunConfig
from NNDF.errors import UsageError
from NNDF.family import LoadedModel, ModelFamily
from NNDF.generation import TokenIds
from NNDF.onnx_export import MODEL_FILE, GraphSpec, check_onnx_io, exported
from NNDF.quantize import check_block_fits, linear_weight_shapes, quantized_graph
from NNDF.workdir import WorkingDir


def token_ids(loaded: LoadedModel) -> TokenIds:
    d = loaded.generation_defaults
    return TokenIds(eos=d["eos_token_id"], pad=d["pad_token_id"], early_stopping=d["early_stopping"],
                    forced_bos=d["forced_bos_token_id"], forced_eos=d["forced_eos_token_id"],
                    length_penalty=d["length_penalty"])


def decoder_start_id(loaded) -> int:
    start = loaded.generation_defaults["decoder_start_token_id"]
    if start is None:
        raise ValueError(f"{loaded.variant} has no decoder_start_token_id in its config")
    return start


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


def make_backends(family: ModelFamily, loaded: LoadedModel, cfg: RunConfig, workdir: WorkingDir) -> list[Backend]:
    """The backends in the order given. frameworks is made last: it may move the model to the GPU
    (and halve it), while the compiled backends' exports trace the host fp32 model."""
    made = {}
    for name in sorted(cfg.backends, key=lambda n: n == "frameworks"):
        module = importlib.import_module(f"{family.package}.{name}")   # frameworks.py, onnxrt.py, trt.py
        made[name] = module.make_backend(loaded, cfg, workdir)
    return [made[name] for name in cfg.backends]


def graph_sizes(workdir: WorkingDir, subdir: tuple[str, ...]) -> list[tuple[str, int]]:
    """(artifact name, bytes of its files) of every finished ONNX graph of a variant: the exports and
    their fused and quantized forms, from their manifests."""
    import json

    from NNDF.workdir import MANIFEST

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
