"""`serve` and `export-triton`: actions whose whole flow is a server's or a model repository's
(NNDF/serving/); they serve generating models only (the actions table refuses encoders).

`serve --api openai` is made here, where the registry and the kinds are at hand: the model is opened,
its scheduler chosen (continuous batching where the model allows it), and the server module is
handed the model's description and the scheduler, importing nothing above the serving layer."""

from __future__ import annotations

from NNDF.actions.action import Action
from NNDF.actions.reporting import save_json
from NNDF.base.config import RunConfig
from NNDF.base.errors import UsageError
from NNDF.export.workdir import WorkingDir
from NNDF.kinds.makers import make_backends
from NNDF.models.family import LoadedModel
from NNDF.models.chat_template import template_for
from NNDF.registry import load, resolve
from NNDF.runtime.backends import CompiledBackend
from NNDF.runtime.continuous import batch_decoder
from NNDF.runtime.placement import torch_threads
from NNDF.serving import export_triton, openai_server, triton_server
from NNDF.serving.arrivals import ArrivalScheduler
from NNDF.serving.continuous import ContinuousScheduler
from NNDF.serving.openai_protocol import ServedModel


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


def scheduler_for(family, loaded: LoadedModel, backend, cfg: RunConfig):
    """(scheduler, how it batches): continuous batching for a decoder-only model on a compiled graph with the
    KV cache (onnxrt, trt), batching per arrival for the others (NNDF/serving/arrivals.py)."""
    s = cfg.serve
    if family.kind == "decoder_only" and isinstance(backend, CompiledBackend) and backend.with_cache:
        decoder = batch_decoder(backend.steps)
        return (ContinuousScheduler(decoder, loaded.token_ids, loaded.tokenizer, s.max_batch_size, s.max_queue,
                                    s.max_prefill_tokens), decoder)
    return ArrivalScheduler(loaded, backend, s.max_batch_size, s.max_queue), None


def serve_openai(cfg: RunConfig) -> dict:
    openai_server.check_installed()
    sock = openai_server.listening_socket(cfg.serve.host, cfg.serve.port)   # a port in use: one line, before loading
    try:
        return _serve_openai(cfg, sock)
    finally:
        sock.close()


def _serve_openai(cfg: RunConfig, sock) -> dict:
    family, loaded, backend = open_text_backend(cfg)
    template = template_for(loaded.tokenizer, cfg.chat_template)
    scheduler, decoder = scheduler_for(family, loaded, backend, cfg)
    how = "continuous batching" if decoder is not None else "batching per arrival"
    if decoder is None and family.kind == "decoder_only" and backend.name != "frameworks":
        how += " (continuous batching needs --use-cache)"
    model = ServedModel(cfg.serve.served_model_name or loaded.variant, loaded.tokenizer, loaded.max_positions,
                        loaded.config.vocab_size, not loaded.config.is_encoder_decoder, template,
                        (lambda prompt, new: decoder.check_fits(1, prompt, new)) if decoder is not None else None)
    description = f"{family.name} {loaded.variant} on {backend.name}, {how}"
    if backend.name == "frameworks":
        return openai_server.run(cfg, model, scheduler, description, sock)
    with torch_threads(1):    # torch's threads would fight the runtime's on a small machine
        return openai_server.run(cfg, model, scheduler, description, sock)


class Serve(Action):
    """Serve one model until SIGTERM or Ctrl-C: OpenAI's API (default) or Triton's."""

    def perform(self, cfg: RunConfig, family) -> dict:
        served = serve_openai(cfg) if cfg.serve.api == "openai" else triton_server.run(cfg, open_text_backend)
        result = {"family": family.name, "variant": cfg.variant, **served}
        save_json(cfg.save_output_fpath, result)
        return result


class ExportTriton(Action):
    """Write a Triton model repository for NVIDIA's Triton container."""

    def perform(self, cfg: RunConfig, family) -> dict:
        result = {"family": family.name, "variant": cfg.variant, **export_triton.run(cfg, family, open_text_backend)}
        save_json(cfg.save_output_fpath, result)
        return result
