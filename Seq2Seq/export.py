"""Export (or reuse) the graphs an encoder-decoder run needs."""

from pathlib import Path

from NNDF.config import RunConfig
from NNDF.encoder_decoder import graph_specs, needed_graphs
from NNDF.family import LoadedModel, ModelFamily
from NNDF.onnx_export import GraphSpec
from NNDF.pipeline import onnx_path
from NNDF.workdir import WorkingDir


def specs_for(family: ModelFamily, loaded: LoadedModel, use_cache: bool) -> dict[str, GraphSpec]:
    specs = graph_specs(loaded.model, family.layout(loaded))
    return {name: specs[name] for name in needed_graphs(use_cache)}


def graph_paths(family: ModelFamily, loaded: LoadedModel, cfg: RunConfig, workdir: WorkingDir,
               specs: dict[str, GraphSpec], form: str = "onnxrt") -> dict[str, Path]:
    """Graph name -> the ONNX file the `form` backend (onnxrt, trt) runs for it (exported or reused)."""
    return {name: onnx_path(spec, loaded, family, cfg, workdir, form) for name, spec in specs.items()}
