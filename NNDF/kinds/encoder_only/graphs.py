"""The encoder graph: what one architecture declares at its boundary (`EncoderLayout`), the
flat-tensor wrapper with the task's outputs, how attention is traced, and the GraphSpec."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from NNDF.base.errors import UsageError
from NNDF.export.first_token import LastLayer, last_layer_first_token
from NNDF.graphs.axes import BATCH, SEQ
from NNDF.graphs.spec import GraphSpec
from NNDF.kinds.encoder_only.tasks import Task


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
    # (NNDF/export/first_token.py); None exports the whole last layer
    last_layer: LastLayer | None = None

    def task_of(self, architecture: str, what: str) -> Task:
        """The task of an HF class name, or one line naming the heads this family serves."""
        head = architecture.removeprefix(self.class_prefix) if architecture.startswith(self.class_prefix) else None
        if head not in self.heads:
            served = ", ".join(self.class_prefix + h for h in self.heads)
            raise UsageError(f"{what} has a {architecture} head, which this toolkit does not serve",
                             f"use a checkpoint with one of: {served}")
        return self.heads[head]


def max_text_positions(config) -> int:
    return getattr(config, "max_position_embeddings", 512)


def image_positions(config) -> int:
    """ViT's sequence: one per patch plus the class token (not an input axis; memory only)."""
    return (config.image_size // config.patch_size) ** 2 + 1


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


def encoder_spec(loaded) -> GraphSpec:
    """The graph of a loaded encoder (an EncoderModel, whose layout, task and config it reads)."""
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
