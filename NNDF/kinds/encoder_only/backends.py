"""Encoder backends: one forward pass, a batch in and the task's outputs out, on a compiled Session
(onnxrt, trt) or on the PyTorch model (frameworks, the reference); and their makers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sys
from abc import ABC, abstractmethod
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from NNDF.base.config import RunConfig
from NNDF.base.errors import UsageError
from NNDF.export.onnx_export import ort_optimized
from NNDF.export.quantize import ort_dynamic_int8, trt_calibrated_int8
from NNDF.graphs.axes import BATCH, RunSizes
from NNDF.graphs.spec import GraphSpec
from NNDF.kinds.encoder_only.graphs import EncoderWrapper, encoder_spec
from NNDF.kinds.encoder_only.inputs import calibration_feeds
from NNDF.models.artifacts import artifact_subdir, onnx_path
from NNDF.runtime import trt_env
from NNDF.runtime.ort_session import OrtSession
from NNDF.runtime.placement import framework_placement, torch_threads
from NNDF.runtime.session import Session
from NNDF.runtime.trt_profiles import profile_ranges

if TYPE_CHECKING:   # annotations only
    from NNDF.kinds.encoder_only.model import EncoderModel


class EncoderBackend(ABC):
    """What the encoder actions see of a backend: a batch of inputs in, the task outputs out."""

    name: str

    def __init__(self, device: str, precision: str):
        self.device, self.precision = device, precision

    @abstractmethod
    def forward(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph's outputs (float32 numpy) for one batch."""


class CompiledEncoder(EncoderBackend):
    """An encoder graph on any compiled Session (ONNX Runtime, TensorRT); `name` is onnxrt or trt."""

    def __init__(self, name: str, session: Session, spec: GraphSpec, precision: str):
        super().__init__(session.device_name, precision)
        self.name, self.session, self.spec = name, session, spec

    def forward(self, feed):
        with torch_threads(1):   # torch's pool would fight ONNX Runtime's threads (shared notes)
            host, _ = self.session.run({n: feed[n] for n in self.spec.input_names}, self.spec.output_names)
        return {n: np.asarray(v, np.float32) for n, v in host.items()}


class TorchEncoder(EncoderBackend):
    """The PyTorch model with its own attention implementation: the reference."""

    name = "frameworks"

    def __init__(self, loaded: EncoderModel, placement):
        super().__init__(placement.device_name, placement.precision)
        self.placement = placement
        self.model = placement.place(loaded.model)
        self.spec = encoder_spec(loaded)
        self.module = EncoderWrapper(self.model, loaded.task, self.spec.input_names, attention=None).eval()

    def forward(self, feed):
        with torch.inference_mode():
            args = []
            for n in self.spec.input_names:
                t = torch.from_numpy(np.ascontiguousarray(feed[n])).to(self.placement.device)
                args.append(t.to(self.placement.dtype) if t.is_floating_point() else t.long())
            outs = self.module(*args)
        outs = (outs,) if isinstance(outs, torch.Tensor) else outs
        return {n: t.float().cpu().numpy() for n, t in zip(self.spec.output_names, outs)}


def _exported(spec: GraphSpec, family, loaded: EncoderModel, cfg: RunConfig, workdir, form: str) -> Path:
    """The plain export (the quantizers of NNDF/export/quantize.py are the decoders' weight-only ones;
    encoders quantize below, so the export is asked for without --quantize)."""
    return onnx_path(spec, loaded, family, replace(cfg, quantize=None), workdir, form=form)


def check_quantize(cfg: RunConfig) -> None:
    if cfg.quantize is not None and cfg.quantize.scheme != "int8":
        raise UsageError(f"--quantize {cfg.quantize.scheme} is for generating models; encoders quantize to int8",
                         "use --quantize int8")


def trt_profile(spec: GraphSpec, cfg: RunConfig, loaded: EncoderModel) -> dict:
    """One optimization profile: the batch of --batch-size (or the --dynamic-batch range, or the
    sizes --batch-sweep visits) and, for text, sequences of 1 .. --input-profile-max-len (the
    model's positions by default), tuned for --input-seq-len."""
    ranges = profile_ranges(spec, cfg.trt, RunSizes(cfg.batch_size, 1, cfg.input_seq_len, 0), loaded.max_positions)
    sweep = tuple(cfg.batch_sweep) + (cfg.batch_size,)
    lo, opt, hi = ranges[BATCH]
    if cfg.trt.dynamic_batch:
        outside = [b for b in sweep if not lo <= b <= hi]
        if outside:
            raise UsageError(f"--batch-sweep visits batch {outside[0]}, outside the dynamic batch range [{lo}, {hi}]",
                             "widen --min/--max-dynamic-batch or drop those sizes from --batch-sweep")
    else:
        ranges[BATCH] = (min(sweep), cfg.batch_size, max(sweep))
    return ranges


# --------------------------------------------------------------------------- makers (ModelFamily's frameworks / onnxrt / trt)
def frameworks(family, loaded: EncoderModel, cfg: RunConfig, workdir=None) -> TorchEncoder:
    return TorchEncoder(loaded, framework_placement(cfg.cpu, cfg.fp16))


def onnxrt(family, loaded: EncoderModel, cfg: RunConfig, workdir) -> CompiledEncoder:
    """fp32/fp16: the plain export, which ONNX Runtime's own session optimizations (ORT_ENABLE_ALL)
    rewrite at load. Measured on this CPU, that ran DistilBERT base ~7% and ViT base ~10% faster than
    onnxruntime.transformers' offline fusions (Attention, EmbedLayerNormalization), whose contrib
    Attention op was slower here than MLAS MatMuls at 128 tokens. --quantize int8: ONNX Runtime's
    dynamic quantization of the *fused* graph: the fusions fold the weights' transposes into constant
    MatMul inputs (the quantizer only takes constant weights) and give QAttention; it ran 2.5x faster
    than the fp32 graph, while dynamic int8 of the plain export left most weights in fp32. ONNX
    Runtime's quantizer takes fp32 graphs only (of an fp16 one it wrote a graph ONNX Runtime could
    not load), so under --fp16 the int8 graph is still made from the fp32 export: int8 replaces
    fp16 for onnxrt, and the run says so."""
    check_quantize(cfg)
    spec = encoder_spec(loaded)
    if cfg.quantize is not None and cfg.fp16 and not cfg.trt.prebuilt_onnx:
        print("note: onnxrt's dynamic int8 is made from the fp32 graph (ONNX Runtime quantizes fp32 graphs "
              "only); its float parts run in fp32", file=sys.stderr)
        cfg = replace(cfg, fp16=False)
    path = _exported(spec, family, loaded, cfg, workdir, "onnxrt")
    if cfg.quantize is not None:
        if loaded.layout.ort_fusions and not cfg.fp16 and not cfg.trt.prebuilt_onnx:
            path = ort_optimized(path, loaded.layout.ort_fusions, loaded.config, workdir)
        path = ort_dynamic_int8(path, workdir, workdir.artifact_dir(*artifact_subdir(family, loaded), "onnx"))
    session = OrtSession(path, allow_cuda=not cfg.cpu, require_cuda=cfg.require_cuda)
    return CompiledEncoder("onnxrt", session, spec, cfg.graph_precision)


def trt(family, loaded: EncoderModel, cfg: RunConfig, workdir) -> CompiledEncoder:
    """TensorRT parses the plain export (ONNX operators only, no ONNX Runtime contrib ops); under
    --quantize int8 its QDQ form: per-channel int8 weights, activation scales calibrated on
    shipped data, zero zero-points."""
    from NNDF.export.trt_engines import engine_for
    from NNDF.runtime.trt_session import TrtSession

    trt_env.require_tensorrt()
    check_quantize(cfg)
    spec = encoder_spec(loaded)
    ranges = trt_profile(spec, cfg, loaded)
    engine = cfg.trt.prebuilt_engines.get("encoder")
    if engine is None:
        source = _exported(spec, family, loaded, cfg, workdir, "trt")
        if cfg.quantize is not None:
            source = trt_calibrated_int8(source, calibration_feeds(loaded), workdir,
                                         workdir.artifact_dir(*artifact_subdir(family, loaded), "onnx"))
        engine = engine_for(source, spec, ranges, cfg.trt, cfg.fp16, workdir, artifact_subdir(family, loaded))
    session = TrtSession(engine, spec, ranges, cfg.trt)
    return CompiledEncoder("trt", session, spec, cfg.graph_precision)
