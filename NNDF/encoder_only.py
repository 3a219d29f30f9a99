"""Everything encoder-only families (BERT, DistilBERT, ViT) share: tasks, graphs, backends.

An encoder answers in one forward pass, so there is no generation loop, no cache and no
step model: a graph takes a batch (token ids + mask, or pixel values) and gives the task
head's output. A family declares an `EncoderLayout` (text or image input, whether it takes
token type ids, which ONNX Runtime fusions apply, which head classes mean which task); the
task comes from the checkpoint's own architecture (`BertForQuestionAnswering` ->
question answering), so one family serves every head its layout lists.

    checkpoint -> EncoderModel (task, labels) -> encoder_spec (one graph, dynamic batch/seq)
        -> CompiledEncoder over any Session (ONNX Runtime, TensorRT) | TorchEncoder (PyTorch)
        -> NNDF/encoder_tasks.py turns outputs into answers (class, span, entities, embedding)
"""

from __future__ import annotations

import contextlib
import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from NNDF.axes import BATCH, SEQ, RunSizes
from NNDF.backends import torch_threads
from NNDF.config import RunConfig
from NNDF.errors import UsageError
from NNDF.family import LoadedModel, ModelFamily, Variant
from NNDF.first_token import LastLayer, last_layer_first_token
from NNDF.onnx_export import GraphSpec
from NNDF.session import Session


class Task(str, enum.Enum):
    """What a head does; the value is the HuggingFace pipeline task of the same meaning."""

    SEQUENCE_CLASSIFICATION = "text-classification"
    QUESTION_ANSWERING = "question-answering"
    TOKEN_CLASSIFICATION = "token-classification"
    EMBEDDINGS = "feature-extraction"          # the encoder alone, mean-pooled over real tokens
    IMAGE_CLASSIFICATION = "image-classification"


# Heads that read only the first token of the last layer (the [CLS] token, ViT's class token).
FIRST_TOKEN_TASKS = (Task.SEQUENCE_CLASSIFICATION, Task.IMAGE_CLASSIFICATION)

# The graph's outputs per task, with their dynamic axes.
TASK_OUTPUTS: dict[Task, dict[str, dict[int, str]]] = {
    Task.SEQUENCE_CLASSIFICATION: {"logits": {0: BATCH}},
    Task.QUESTION_ANSWERING: {"start_logits": {0: BATCH, 1: SEQ}, "end_logits": {0: BATCH, 1: SEQ}},
    Task.TOKEN_CLASSIFICATION: {"logits": {0: BATCH, 1: SEQ}},
    Task.EMBEDDINGS: {"embeddings": {0: BATCH}},
    Task.IMAGE_CLASSIFICATION: {"logits": {0: BATCH}},
}


def _auto_class(task: Task):
    import transformers

    return getattr(transformers, {
        Task.SEQUENCE_CLASSIFICATION: "AutoModelForSequenceClassification",
        Task.QUESTION_ANSWERING: "AutoModelForQuestionAnswering",
        Task.TOKEN_CLASSIFICATION: "AutoModelForTokenClassification",
        Task.EMBEDDINGS: "AutoModel",
        Task.IMAGE_CLASSIFICATION: "AutoModelForImageClassification",
    }[task])


@dataclass(frozen=True)
class EncoderLayout:
    """How one encoder architecture differs at its graph boundary."""

    class_prefix: str                       # HF class names are prefix + head: "DistilBert" + "ForQuestionAnswering"
    heads: dict[str, Task]                  # head suffix -> task ("Model": the bare encoder)
    image_input: bool = False               # pixel_values instead of token ids
    uses_token_types: bool = False          # BERT takes token_type_ids (QA's question/context segments)
    ort_fusions: str | None = None          # onnxruntime.transformers model_type fused before int8 quantization
    fp16_keep_fp32_ops: tuple[str, ...] = ()
    # how attention is traced for export (see eager_attention): "eager", or EXPORT_ATTENTION where
    # eager's pattern escapes ONNX Runtime's fusion (ViT: scores scaled by Mul, and no mask)
    export_attention: str = "eager"
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)     # the image processor's normalisation (ViT's)
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    # the last layer run for the first token alone, in graphs whose head reads only that token
    # (NNDF/first_token.py); None exports the whole last layer
    last_layer: LastLayer | None = None

    def task_of(self, architecture: str, what: str) -> Task:
        """The task of an HF class name, or one line naming the heads this family serves."""
        head = architecture.removeprefix(self.class_prefix) if architecture.startswith(self.class_prefix) else None
        if head not in self.heads:
            served = ", ".join(self.class_prefix + h for h in self.heads)
            raise UsageError(f"{what} has a {architecture} head, which this toolkit does not serve",
                             f"use a checkpoint with one of: {served}")
        return self.heads[head]


class TaskModels:
    """The family's `model_class`: picks the Auto class of the checkpoint's own head, so loading
    from the hub, a --torch-dir or a shipped config keeps the head it was saved with."""

    def __init__(self, family_name: str):
        self.family_name = family_name

    def _task(self, config, what: str) -> Task:
        from NNDF.registry import get_family

        family = get_family(self.family_name)
        layout = family.layouts.get(config.model_type, family.layouts["default"])
        # a config without architectures (built in code) is the bare encoder where the family serves one
        bare = "Model" if "Model" in layout.heads else next(iter(layout.heads))
        architecture = (config.architectures or [layout.class_prefix + bare])[0]
        return layout.task_of(architecture, what)

    def from_config(self, config, **kwargs):
        return _auto_class(self._task(config, f"config {config.model_type}")).from_config(config, **kwargs)

    def from_pretrained(self, source, **kwargs):
        from transformers import AutoConfig

        local = {"local_files_only": kwargs["local_files_only"]} if "local_files_only" in kwargs else {}
        config = AutoConfig.from_pretrained(source, **local)
        return _auto_class(self._task(config, f"'{source}'")).from_pretrained(source, **kwargs)


@dataclass
class EncoderModel(LoadedModel):
    """A loaded encoder: its task, class names and how inputs are prepared."""

    task: Task = Task.EMBEDDINGS
    layout: EncoderLayout | None = None
    image_size: tuple[int, int] | None = None     # (height, width) of image models
    image_dirs: tuple[Path, ...] = ()             # where relative image paths are also looked up
    calibration_path: Path | None = None          # shipped data the trt int8 activation scales come from

    generates = False                             # actions dispatch on this (not a dataclass field)

    @property
    def labels(self) -> list[str]:
        """Class names by index (sequence, token or image classes); empty for embeddings and QA."""
        if self.task in (Task.EMBEDDINGS, Task.QUESTION_ANSWERING):
            return []
        id2label = self.config.id2label
        return [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(self.config.num_labels)]

    @property
    def is_image(self) -> bool:
        return self.layout.image_input


@dataclass
class EncoderFamily(ModelFamily):
    """A ModelFamily of encoders: loaded models are EncoderModels, with their task.

    `samples` names, per task, the shipped file `accuracy` scores without --dataset-path;
    `calibration_data` the shipped file trt's int8 activation scales are calibrated on (training
    data, never the scored sample). Paths are relative to the family's folder."""

    samples: dict = field(default_factory=dict)
    calibration_data: dict = field(default_factory=dict)

    generates = False

    # what the family folder binds: export.py's graph, and the backend makers of frameworks.py,
    # onnxrt.py and trt.py (`make_backend = BERT_FAMILY.onnxrt`)
    def encoder_graph(self, loaded: EncoderModel) -> GraphSpec:
        return encoder_spec(loaded)

    def frameworks(self, loaded: EncoderModel, cfg: RunConfig, workdir=None) -> "TorchEncoder":
        return frameworks_backend(loaded, cfg)

    def onnxrt(self, loaded: EncoderModel, cfg: RunConfig, workdir) -> "CompiledEncoder":
        return onnxrt_backend(self, loaded, cfg, workdir)

    def trt(self, loaded: EncoderModel, cfg: RunConfig, workdir) -> "CompiledEncoder":
        return trt_backend(self, loaded, cfg, workdir)

    def saved_tokenizer(self, source: str, **kwargs):
        """Image models have no tokenizer files: their config describes their preprocessing."""
        if all(layout.image_input for layout in self.layouts.values()):
            return None
        return super().saved_tokenizer(source, **kwargs)

    def _finish(self, variant: Variant, model, tokenizer, key: dict) -> EncoderModel:
        model.eval()
        config = model.config
        layout = self.layouts.get(config.model_type, self.layouts["default"])
        task = layout.task_of(type(model).__name__, variant.name)
        size = None
        if layout.image_input:
            s = config.image_size
            size = (s, s) if isinstance(s, int) else tuple(s)
        data = self.calibration_data.get(task)
        return EncoderModel(variant.name, model, tokenizer, key, self.max_positions(config), {}, variant.arch,
                            task=task, layout=layout, image_size=size, image_dirs=(self.folder,),
                            calibration_path=self.folder / data if data else None)


def max_text_positions(config) -> int:
    return getattr(config, "max_position_embeddings", 512)


def image_positions(config) -> int:
    """ViT's sequence: one per patch plus the class token (not an input axis; memory only)."""
    return (config.image_size // config.patch_size) ** 2 + 1


# --------------------------------------------------------------------------- graph
EXPORT_ATTENTION = "hf_trt_toolkit_export"


def _export_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention as ONNX Runtime's Attention fusion recognises it without a mask: the scores
    *divided* by sqrt(head_dim) (transformers 5 multiplies by the inverse, which the fusion matches
    only when a mask Add follows, so ViT's attention stayed unfused), softmax, the weighted sum.
    Plain MatMul/Div/Softmax, so TensorRT parses it too. Only for mask-free models: transformers
    builds no mask for an attention implementation it does not know."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) / (1.0 / scaling)
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


@contextlib.contextmanager
def eager_attention(model, implementation: str = "eager"):
    """Trace attention as plain MatMul/Softmax (the eager computation, or `_export_attention`):
    the pattern ONNX Runtime's Attention fusion recognises, and TensorRT parses. The PyTorch
    backend keeps the model's own (SDPA) attention, so frameworks is measured at its best."""
    from transformers import AttentionInterface

    if implementation == EXPORT_ATTENTION:
        AttentionInterface.register(EXPORT_ATTENTION, _export_attention)
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = implementation
    try:
        yield
    finally:
        config._attn_implementation = before


class EncoderWrapper(torch.nn.Module):
    """Flat tensors in, the task's outputs out (no ModelOutput objects in the graph)."""

    def __init__(self, model, task: Task, input_names: list[str], attention: str | None = "eager",
                 last_layer: LastLayer | None = None):
        super().__init__()
        self.model, self.task, self.input_names, self.attention = model, task, input_names, attention
        self.last_layer = last_layer

    def forward(self, *inputs):
        kwargs = dict(zip(self.input_names, inputs))
        with contextlib.ExitStack() as stack:
            if self.attention:
                stack.enter_context(eager_attention(self.model, self.attention))
            if self.last_layer:
                stack.enter_context(last_layer_first_token(self.model, self.last_layer))
            out = self.model(**kwargs)
        if self.task is Task.QUESTION_ANSWERING:
            return out.start_logits, out.end_logits
        if self.task is Task.EMBEDDINGS:
            # sentence-transformers' mean pooling: the average of the real tokens' last hidden states
            hidden = out.last_hidden_state
            mask = kwargs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return out.logits


def input_axes(layout: EncoderLayout) -> dict[str, dict[int, str]]:
    if layout.image_input:
        return {"pixel_values": {0: BATCH}}
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if layout.uses_token_types else [])
    return {n: {0: BATCH, 1: SEQ} for n in names}


def encoder_spec(loaded: EncoderModel) -> GraphSpec:
    layout, task, config = loaded.layout, loaded.task, loaded.config
    inputs = input_axes(layout)
    names = list(inputs)

    def make_inputs(sizes: dict[str, int]) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(sum(sizes.values()))
        b = sizes[BATCH]
        if layout.image_input:
            return {"pixel_values": torch.randn(b, config.num_channels, *loaded.image_size, generator=gen)}
        s = sizes[SEQ]
        mask = torch.ones(b, s, dtype=torch.int64)
        if b > 1:      # padded rows are always checked: row 0 right-padded (BERT's side), the last left-padded
            mask[0, s - min(3, s - 1):] = 0
            mask[-1, : min(2, s - 1)] = 0
        feed = {"input_ids": torch.randint(0, config.vocab_size, (b, s), generator=gen), "attention_mask": mask}
        if layout.uses_token_types:
            types = torch.zeros(b, s, dtype=torch.int64)
            types[:, s // 2:] = 1
            feed["token_type_ids"] = types
        return feed

    if layout.image_input:
        trace, verify = {BATCH: 2}, ({BATCH: 3}, {BATCH: 1})
    else:
        trace, verify = {BATCH: 2, SEQ: 7}, ({BATCH: 3, SEQ: 11}, {BATCH: 1, SEQ: 5}, {BATCH: 4, SEQ: 16})
    outputs = TASK_OUTPUTS[task]
    last = layout.last_layer if task in FIRST_TOKEN_TASKS else None
    return GraphSpec(
        name="encoder", inputs=inputs, outputs=outputs,
        make_module=lambda m: EncoderWrapper(m, task, names, layout.export_attention, last),
        # verified against the model's own forward, whole last layer included
        make_reference=lambda m: EncoderWrapper(m, task, names, layout.export_attention),
        make_inputs=make_inputs, trace_sizes=trace, verify_sizes=verify,
        fp16_keep_fp32_ops=layout.fp16_keep_fp32_ops, float_outputs_fp32=tuple(outputs),
        key_extra={"last_layer": "first token"} if last else {},
    )


# --------------------------------------------------------------------------- backends
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


def frameworks_backend(loaded: EncoderModel, cfg: RunConfig) -> TorchEncoder:
    from NNDF.torch_placement import framework_placement

    return TorchEncoder(loaded, framework_placement(cfg.cpu, cfg.fp16))


def _exported(spec: GraphSpec, family: ModelFamily, loaded: EncoderModel, cfg: RunConfig, workdir, form: str) -> Path:
    """The plain export (the quantizers of NNDF/quantize.py are the decoders' weight-only ones;
    encoders quantize below, so the export is asked for without --quantize)."""
    from NNDF.pipeline import onnx_path

    return onnx_path(spec, loaded, family, replace(cfg, quantize=None), workdir, form=form)


def check_quantize(cfg: RunConfig) -> None:
    if cfg.quantize is not None and cfg.quantize.scheme != "int8":
        raise UsageError(f"--quantize {cfg.quantize.scheme} is for generating models; encoders quantize to int8",
                         "use --quantize int8")


def onnxrt_backend(family: ModelFamily, loaded: EncoderModel, cfg: RunConfig, workdir) -> CompiledEncoder:
    """fp32/fp16: the plain export, which ONNX Runtime's own session optimizations (ORT_ENABLE_ALL)
    rewrite at load. Measured on this CPU, that ran DistilBERT base ~7% and ViT base ~10% faster than
    onnxruntime.transformers' offline fusions (Attention, EmbedLayerNormalization), whose contrib
    Attention op was slower here than MLAS MatMuls at 128 tokens. --quantize int8: ONNX Runtime's
    dynamic quantization of the *fused* graph: the fusions fold the weights' transposes into constant
    MatMul inputs (the quantizer only takes constant weights) and give QAttention; it ran 2.5x faster
    than the fp32 graph, while dynamic int8 of the plain export left most weights in fp32."""
    from NNDF.onnx_export import ort_optimized
    from NNDF.ort_session import OrtSession
    from NNDF.pipeline import artifact_subdir
    from NNDF.quantize import ort_dynamic_int8

    check_quantize(cfg)
    spec = encoder_spec(loaded)
    path = _exported(spec, family, loaded, cfg, workdir, "onnxrt")
    if cfg.quantize is not None:
        if loaded.layout.ort_fusions and not cfg.fp16 and not cfg.trt.prebuilt_onnx:
            path = ort_optimized(path, loaded.layout.ort_fusions, loaded.config, workdir)
        path = ort_dynamic_int8(path, workdir, workdir.artifact_dir(*artifact_subdir(family, loaded), "onnx"))
    session = OrtSession(path, allow_cuda=not cfg.cpu)
    return CompiledEncoder("onnxrt", session, spec, cfg.graph_precision)


def trt_profile(spec: GraphSpec, cfg: RunConfig, loaded: EncoderModel) -> dict:
    """One optimization profile: the batch of --batch-size (or the --dynamic-batch range, or the
    sizes --batch-sweep visits) and, for text, sequences of 1 .. --input-profile-max-len (the
    model's positions by default), tuned for --input-seq-len."""
    from NNDF.trt_build import profile_ranges

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


def trt_backend(family: ModelFamily, loaded: EncoderModel, cfg: RunConfig, workdir) -> CompiledEncoder:
    """TensorRT parses the plain export (ONNX operators only, no ONNX Runtime contrib ops); under
    --quantize int8 its QDQ form: per-channel int8 weights, activation scales calibrated on
    shipped data, zero zero-points."""
    from NNDF import trt_env
    from NNDF.pipeline import artifact_subdir
    from NNDF.quantize import trt_calibrated_int8
    from NNDF.trt_build import engine_for
    from NNDF.trt_session import TrtSession

    trt_env.require_tensorrt()
    check_quantize(cfg)
    spec = encoder_spec(loaded)
    ranges = trt_profile(spec, cfg, loaded)
    engine = cfg.trt.prebuilt_engines.get("encoder")
    if engine is None:
        source = _exported(spec, family, loaded, cfg, workdir, "trt")
        if cfg.quantize is not None:
            from NNDF.encoder_tasks import calibration_feeds

            source = trt_calibrated_int8(source, calibration_feeds(loaded), workdir,
                                         workdir.artifact_dir(*artifact_subdir(family, loaded), "onnx"))
        engine = engine_for(source, spec, ranges, cfg.trt, cfg.fp16, workdir, artifact_subdir(family, loaded))
    session = TrtSession(engine, spec, ranges, cfg.trt)
    return CompiledEncoder("trt", session, spec, cfg.graph_precision)
