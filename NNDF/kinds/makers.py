"""A run's backends, made by its family's kind: each kind's backends.py has a `frameworks`, an
`onnxrt` and a `trt` function taking (family, loaded, cfg, workdir); a family names its kind."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from NNDF.base.config import FROM_WEIGHTS_BLOCK_SIZE
from NNDF.base.errors import UsageError
from NNDF.export.quantize import check_block_fits, check_trt_quantization
from NNDF.kinds.decoder_only import backends as decoder_only
from NNDF.kinds.encoder_decoder import backends as encoder_decoder
from NNDF.kinds.encoder_only import backends as encoder_only
from NNDF.kinds.image_to_text import backends as image_to_text
from NNDF.runtime.memory import linear_weight_shapes

KINDS = {"decoder_only": decoder_only, "encoder_decoder": encoder_decoder, "image_to_text": image_to_text,
         "encoder_only": encoder_only}


def backend_maker(family, name: str):
    """`make_backend(loaded, cfg, workdir=None)` of one backend (frameworks, onnxrt, trt) of a family."""
    return partial(getattr(KINDS[family.kind], name), family)


def default_block_size(cfg, family, loaded):
    """cfg with --quant-block-size's default for the graph onnxrt will run: a decoder written from the
    weights (LLAMA's, GPT2's) takes 64 (NNDF/base/config.py says why) unless trt runs beside it (64 already) or a block size
    was given."""
    q = cfg.quantize
    if q is None or q.block_given or q.block_size == FROM_WEIGHTS_BLOCK_SIZE or "onnxrt" not in cfg.backends:
        return cfg
    if family.kind != "decoder_only" or not decoder_only.written_from_weights(family.layout(loaded), loaded, cfg):
        return cfg
    return replace(cfg, quantize=replace(q, block_size=FROM_WEIGHTS_BLOCK_SIZE, block_given=True))


def check_quantization(family, loaded, cfg) -> None:
    """--quantize against what every backend of the run takes, in one UsageError line before any
    backend exports a graph: encoders quantize to int8; generating models' trt graphs keep to
    TensorRT's rules (NNDF/export/quantize.py, check_trt_quantization), their blocks whole."""
    q = cfg.quantize
    if q is None:
        return
    if not family.generates:
        encoder_only.check_quantize(cfg)
        return
    if "trt" in cfg.backends:
        check_trt_quantization(q, cfg.fp16)
    check_block_fits(linear_weight_shapes(loaded.model), q.block_size, loaded.variant, whole_blocks="trt" in cfg.backends)


def check_cuda(cfg) -> None:
    """--require-cuda: frameworks needs a CUDA device torch sees (onnxrt's session checks its own
    provider, NNDF/runtime/ort_session.py; trt runs only on CUDA)."""
    from NNDF.runtime.placement import cuda_available

    if cfg.require_cuda and "frameworks" in cfg.backends and not cuda_available():
        raise UsageError("--require-cuda: PyTorch sees no CUDA device, so frameworks would run on the CPU",
                         "run on a GPU machine with a CUDA build of torch, or drop --require-cuda")


def make_backends(family, loaded, cfg, workdir) -> list:
    """cfg's backends in the order given. frameworks is made last: it may move the model to the
    GPU (and halve it), while the compiled backends' exports trace the host fp32 model."""
    check_cuda(cfg)
    cfg = default_block_size(cfg, family, loaded)
    check_quantization(family, loaded, cfg)
    made = {}
    for name in sorted(cfg.backends, key=lambda n: n == "frameworks"):
        made[name] = backend_maker(family, name)(loaded, cfg, workdir)
    return [made[name] for name in cfg.backends]
