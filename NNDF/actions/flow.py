"""The usual run of an action on a model: check the inputs, check the model's size fits (from its
config, before loading), load the model, check the run fits, export or reuse its graphs, open the
backends, release the torch model unless frameworks runs it, answer, save the JSON."""

from __future__ import annotations

import sys

from NNDF.actions.reporting import save_json
from NNDF.base.config import RunConfig
from NNDF.base.progress import status
from NNDF.export.workdir import WorkingDir
from NNDF.kinds.makers import default_block_size, make_backends
from NNDF.models.artifacts import artifact_subdir, graph_sizes
from NNDF.registry import load
from NNDF.runtime.memory import ModelShape


def run_on_model(action, cfg: RunConfig, family) -> dict:
    workdir = WorkingDir(cfg.working_dir, verify=cfg.verify)
    action.check_inputs(cfg, family)               # the data files, before any training or export
    meta = family.meta_model(cfg)                  # the config on the meta device: no weight read
    if meta is not None:
        action.check_shape(cfg, family, ModelShape.of(*meta))   # a model too large is refused unread
    with status(f"loading {family.name} {cfg.variant}"):
        loaded = load(family, cfg)
    cfg = action.fit(cfg, family, loaded)           # defaults a small model cannot hold, made to fit it
    cfg = default_block_size(cfg, family, loaded)   # --quant-block-size's default for the graph onnxrt runs
    subdir = artifact_subdir(family, loaded)
    if cfg.cleanup:
        kept = workdir.cleanup(*subdir)
        if kept:
            print(f"note: --cleanup kept {len(kept)} cached artifact(s) that another run is building or using",
                  file=sys.stderr)
    if cfg.info:
        print(family.describe())
        print(f"loaded: {loaded.variant}, {sum(p.numel() for p in loaded.model.parameters()) / 1e6:.1f}M parameters, "
              f"{loaded.max_positions} positions; artifacts in {workdir.artifact_dir(*subdir)}")
        estimate = action.memory(cfg, family, loaded)
        print(f"memory: this run needs {estimate.describe()}")
        print("\n".join(estimate.lines()))
    action.check_loaded(cfg, family, loaded)       # prompt lengths and peak memory, before any export
    backends = make_backends(family, loaded, cfg, workdir)
    if not action.keeps_torch_model(cfg, loaded):
        loaded.release_weights()                   # the graphs are made: the run holds only its sessions
    if cfg.info:
        for name, size in graph_sizes(workdir, subdir):
            print(f"graph {name}: {size / 1e6:.2f} MB")
    result = action.answer(cfg, family, loaded, backends)
    save_json(cfg.save_output_fpath, result)
    return result
