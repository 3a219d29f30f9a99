"""A run's backends, made by its family's kind: each kind's backends.py has a `frameworks`, an
`onnxrt` and a `trt` function taking (family, loaded, cfg, workdir); a family names its kind."""

from __future__ import annotations

from functools import partial

from NNDF.kinds.decoder_only import backends as decoder_only
from NNDF.kinds.encoder_decoder import backends as encoder_decoder
from NNDF.kinds.encoder_only import backends as encoder_only
from NNDF.kinds.image_to_text import backends as image_to_text

KINDS = {"decoder_only": decoder_only, "encoder_decoder": encoder_decoder, "image_to_text": image_to_text,
         "encoder_only": encoder_only}


def backend_maker(family, name: str):
    """`make_backend(loaded, cfg, workdir=None)` of one backend (frameworks, onnxrt, trt) of a family."""
    return partial(getattr(KINDS[family.kind], name), family)


def make_backends(family, loaded, cfg, workdir) -> list:
    """cfg's backends in the order given. frameworks is made last: it may move the model to the
    GPU (and halve it), while the compiled backends' exports trace the host fp32 model."""
    made = {}
    for name in sorted(cfg.backends, key=lambda n: n == "frameworks"):
        made[name] = backend_maker(family, name)(loaded, cfg, workdir)
    return [made[name] for name in cfg.backends]
