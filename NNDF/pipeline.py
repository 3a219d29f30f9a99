"""From a validated RunConfig to ready backends: load the model once, export or
reuse graphs, open sessions. Families call these helpers from their thin
frameworks.py / onnxrt.py / trt.py files."""

from __future__ import annotations

import importlib
from pathlib import Path

from NNDF.backends import Backend
from NNDF.config import RunConfig
from NNDF.family import LoadedModel, ModelFamily
from NNDF.generation import TokenIds
from NNDF.onnx_export import MODEL_FILE, GraphSpec, check_onnx_io, exported
from NNDF.workdir import WorkingDir

BACKEND_MODULES = {"frameworks": "frameworks", "onnxrt": "onnxrt", "trt": "trt"}


def token_ids(loaded: LoadedModel) -> TokenIds:
    d = loaded.generation_defaults
    return TokenIds(eos=d["eos_token_id"], pad=d["pad_token_id"], early_stopping=d["early_stopping"],
                    forced_bos=d["forced_bos_token_id"], forced_eos=d["forced_eos_token_id"],
                    length_penalty=d["length_penalty"])


def artifact_subdir(family: ModelFamily, loaded: LoadedModel) -> tuple[str, ...]:
    return (family.name, loaded.variant.replace("/", "--"))


def onnx_path(spec: GraphSpec, loaded: LoadedModel, family: ModelFamily, cfg: RunConfig, workdir: WorkingDir) -> Path:
    """The user's prebuilt --<graph>-onnx if given (checked against the runner's IO), else the cached export."""
    graph_kind = spec.name.removesuffix("_nocache")  # "decoder_nocache" is given as --decoder-onnx too
    given = cfg.trt.prebuilt_onnx.get(graph_kind)
    if given is not None:
        check_onnx_io(given, spec)
        return given
    art = exported(workdir, artifact_subdir(family, loaded), loaded.model, spec, loaded.source_key, cfg.fp16)
    return art.file(MODEL_FILE)


def make_backends(family: ModelFamily, loaded: LoadedModel, cfg: RunConfig, workdir: WorkingDir) -> list[Backend]:
    backends = []
    for name in cfg.backends:
        module = importlib.import_module(f"{family.package}.{BACKEND_MODULES[name]}")
        backends.append(module.make_backend(loaded, cfg, workdir))
    return backends
