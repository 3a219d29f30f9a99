"""The contract of one exported graph: its input and output names with their dynamic axes, the
torch module it is traced from, and the dummy inputs it is traced and checked with.

Everything that makes, runs or serves a graph reads it from here; nothing here exports.
`check_onnx_io` holds an ONNX file (a user's or a cached one) to the spec's names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx
import torch

from NNDF.base.errors import UsageError

Sizes = dict[str, int]              # dynamic axis name -> size, e.g. {"batch": 2, "seq": 5, "past_len": 3}


@dataclass(frozen=True)
class GraphSpec:
    """One exported graph: its IO contract and how to trace it."""

    name: str                                        # "decoder", "encoder", "cache_generator", ...
    inputs: dict[str, dict[int, str]]                # ordered input names -> {axis: dynamic axis name}
    outputs: dict[str, dict[int, str]]
    make_module: Callable[[torch.nn.Module], torch.nn.Module]
    make_inputs: Callable[[Sizes], dict[str, torch.Tensor]]   # dummy/verification inputs at given sizes
    trace_sizes: Sizes                               # shapes used for tracing
    verify_sizes: tuple[Sizes, ...] = ()             # other shapes checked right after export
    fp16_keep_fp32_ops: tuple[str, ...] = ()         # op types kept in fp32 inside an fp16 graph
    fp16_keep_fp32_node_patterns: tuple[str, ...] = ()   # substrings of node names kept in fp32 (module paths)
    float_outputs_fp32: tuple[str, ...] = ("logits",)   # outputs left fp32 in an fp16 graph
    tolerance: float = 1e-4
    key_extra: dict = field(default_factory=dict)
    # what export verification compares against (default make_module): a graph that computes
    # less than its module (NNDF/export/first_token.py) is checked against the model's full forward
    make_reference: Callable[[torch.nn.Module], torch.nn.Module] | None = None

    @property
    def input_names(self) -> list[str]:
        return list(self.inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self.outputs)


# ---------------------------------------------------------------- dummy inputs for make_inputs
def padded_mask(rows: int, length: int, side: str) -> torch.Tensor:
    """An attention mask whose row 0 is padded (when there are several rows), so export checks
    padded rows too: on the left as batched prompts are, or on the right as tokenizers pad encoder inputs."""
    mask = torch.ones(rows, length, dtype=torch.int64)
    if rows > 1:
        if side == "left":
            mask[0, : min(2, length - 1)] = 0
        else:
            mask[0, max(1, length - 2):] = 0
    return mask


def random_tensors(names, shape, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One standard-normal tensor of `shape` per name (cache keys and values), drawn in order."""
    return {name: torch.randn(*shape, generator=generator) for name in names}


def check_onnx_io(path: Path, spec: GraphSpec) -> None:
    """A user-supplied or cached ONNX file must have exactly the IO names the runner feeds."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises several types for garbage
        raise UsageError(f"{path} is not a readable ONNX file ({type(e).__name__})",
                         "re-export it or delete it (--cleanup)") from None
    inputs = [i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    outputs = [o.name for o in proto.graph.output]
    if sorted(inputs) != sorted(spec.input_names) or sorted(outputs) != sorted(spec.output_names):
        raise UsageError(f"{path} does not look like a {spec.name} graph: inputs {inputs[:4]}..., outputs {outputs[:3]}...",
                         f"it needs inputs {spec.input_names[:4]}... and outputs {spec.output_names[:3]}...")


def needed_graphs(use_cache: bool) -> tuple[str, ...]:
    """The graphs an encoder-then-decoder run needs (text or image encoder): with the cache, the
    cross-attention cache generator and the cached decoder; without, the decoder that reads the encoder."""
    return ("encoder", "cache_generator", "decoder") if use_cache else ("encoder", "decoder_nocache")
