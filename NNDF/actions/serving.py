"""`serve` and `export-triton`: actions whose whole flow is a server's or a model repository's
(NNDF/serving/); they serve generating models only (the actions table refuses encoders)."""

from __future__ import annotations

from NNDF.actions.action import Action
from NNDF.actions.reporting import save_json
from NNDF.base.config import RunConfig
from NNDF.base.errors import UsageError
from NNDF.export.workdir import WorkingDir
from NNDF.kinds.makers import make_backends
from NNDF.models.family import LoadedModel
from NNDF.registry import load, resolve
from NNDF.serving import export_triton, triton_server


def open_text_backend(cfg: RunConfig):
    """(family, loaded model, its one backend) for a model that answers text prompts (not an image
    model): the model loaded, its graphs exported or found, the session open."""
    family, cfg = resolve(cfg)
    loaded = load(family, cfg)
    if type(loaded).encode_prompts is not LoadedModel.encode_prompts:
        raise UsageError(f"serve answers text prompts, and {family.name} needs more than text (an image)",
                         "serve a text family such as GPT2, OPT, BLOOM, T5 or BART")
    backend, = make_backends(family, loaded, cfg, WorkingDir(cfg.working_dir))
    return family, loaded, backend


class Serve(Action):
    """Serve one model until SIGTERM or Ctrl-C."""

    def perform(self, cfg: RunConfig, family) -> dict:
        result = {"family": family.name, "variant": cfg.variant, **triton_server.run(cfg, open_text_backend)}
        save_json(cfg.save_output_fpath, result)
        return result


class ExportTriton(Action):
    """Write a Triton model repository for NVIDIA's Triton container."""

    def perform(self, cfg: RunConfig, family) -> dict:
        result = {"family": family.name, "variant": cfg.variant, **export_triton.run(cfg, family, open_text_backend)}
        save_json(cfg.save_output_fpath, result)
        return result
