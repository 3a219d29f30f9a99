"""Torch -> ONNX, once, for any family.

A family describes each graph it needs as a `GraphSpec` (input and output
names with their dynamic axes, a wrapper module, dummy inputs). This module
exports it with the TorchScript exporter, optionally converts it to fp16,
checks it against PyTorch at shapes other than the trace shapes, and stores it
as a working-dir artifact keyed by everything that could change its content.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from NNDF.base.hashing import stable_hash
from NNDF.base.progress import status
from NNDF.export.onnx_fold import parser_clean
from NNDF.export.onnx_rotary import fuse_rotary, rotary_tables
from NNDF.export.onnx_shapes import fold_shape_arithmetic
from NNDF.export.workdir import Artifact, DATA_FILE, MODEL_FILE, WorkingDir, source_description, source_identity
from NNDF.graphs.spec import GraphSpec, Sizes, check_onnx_io

OPSET = 17
EXPORTER_VERSION = 3                # bump when export code changes what it writes (3: parser-clean graphs)
VERIFY_MAX_WEIGHT_BYTES = 1 << 30   # larger models are not verified right after export (memory)

def onnx_key(spec: GraphSpec, source_key: dict, fp16: bool) -> dict:
    return {
        "graph": spec.name, "source": source_key, "fp16": fp16, "opset": OPSET, "exporter": EXPORTER_VERSION,
        "inputs": {k: {str(a): n for a, n in v.items()} for k, v in spec.inputs.items()},
        "outputs": list(spec.outputs), "torch": torch.__version__.split("+")[0],
        "transformers": __import__("transformers").__version__, **spec.key_extra,
    }


def artifact_name(spec: GraphSpec, fp16: bool, key: dict) -> str:
    return f"{spec.name}-{'fp16' if fp16 else 'fp32'}-{stable_hash(key)}"


def run_torch(module: torch.nn.Module, spec: GraphSpec, feed: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        outs = module(*(feed[n] for n in spec.input_names))
    if isinstance(outs, torch.Tensor):
        outs = (outs,)
    return {name: t.float().numpy() for name, t in zip(spec.output_names, outs)}


def export_graph(model: torch.nn.Module, spec: GraphSpec, out_dir: Path, fp16: bool) -> dict:
    """Trace `spec` into out_dir/model.onnx with its weights in out_dir/model.onnx.data.

    The graph is traced without parameters (they become named graph inputs) and each
    weight is then streamed from the torch model into the data file, so export holds no
    copy of the weights beyond the model itself; the exporter's own path would hold two
    or three, which is what decides whether a large model can be exported at all.
    Small constants are then folded and integer CumSums run in float (NNDF/export/onnx_fold.py), so
    the file is one TensorRT's ONNX parser accepts as written.
    """
    module = spec.make_module(model)
    module.eval()  # export restores the wrapper's training flag onto the model: it must be eval too
    dummy = spec.make_inputs(spec.trace_sizes)
    graph_file = out_dir / MODEL_FILE
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad(), _shape_inference_without_weights():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        torch.onnx.export(module, tuple(dummy[n] for n in spec.input_names), str(graph_file),
                          input_names=spec.input_names, output_names=spec.output_names,
                          dynamic_axes={**spec.inputs, **spec.outputs}, opset_version=OPSET,
                          export_params=False, do_constant_folding=False, dynamo=False)
    proto = onnx.load(str(graph_file))   # the graph alone: kilobytes
    attach_weights(proto, module, out_dir / DATA_FILE)
    if fp16:
        onnx.load_external_data_for_model(proto, str(out_dir))   # the converter needs the values
        proto = to_fp16(proto, spec)
        cleaned = parser_clean(proto)
        os.remove(out_dir / DATA_FILE)
        onnx.save_model(proto, str(graph_file), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=DATA_FILE, size_threshold=1024)
    else:
        cleaned = parser_clean(proto)
        onnx.save_model(proto, str(graph_file))
    return {"graph": spec.name, "inputs": spec.input_names, "outputs": spec.output_names, **cleaned}


@contextlib.contextmanager
def _shape_inference_without_weights():
    """torch's exporter ends with ONNX shape inference over a copy of the graph that carries every
    weight's values (3.3 GiB on top of a 2.1 GiB bloom-560m). The weights' shapes are already on
    the graph's inputs, which is all shape inference needs, so this hands that one pass no values."""
    from torch import _C

    original = _C._jit_pass_onnx_graph_shape_type_inference
    _C._jit_pass_onnx_graph_shape_type_inference = lambda graph, params, opset: original(graph, {}, opset)
    try:
        yield
    finally:
        _C._jit_pass_onnx_graph_shape_type_inference = original


def attach_weights(proto: onnx.ModelProto, module: torch.nn.Module, data_path: Path) -> None:
    """Turn parameter inputs into initializers whose bytes are written, one tensor at a time,
    straight from the torch module into `data_path`."""
    named = dict(module.named_parameters(remove_duplicate=False))
    named.update(dict(module.named_buffers(remove_duplicate=False)))
    keep, offset = [], 0
    with open(data_path, "wb") as data:
        for graph_input in proto.graph.input:
            tensor = named.get(graph_input.name)
            if tensor is None:
                keep.append(graph_input)
                continue
            array = tensor.detach().contiguous().numpy()
            pad = -offset % 64                     # aligned, so runtimes may map tensors in place
            data.write(b"\0" * pad)
            offset += pad
            array.tofile(data)
            init = onnx.TensorProto(name=graph_input.name, dims=list(array.shape),
                                    data_type=onnx.helper.np_dtype_to_tensor_dtype(array.dtype))
            init.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", DATA_FILE), ("offset", offset), ("length", array.nbytes)):
                init.external_data.add(key=key, value=str(value))
            proto.graph.initializer.append(init)
            offset += array.nbytes
    del proto.graph.input[:]
    proto.graph.input.extend(keep)


def to_fp16(proto: onnx.ModelProto, spec: GraphSpec) -> onnx.ModelProto:
    """Half precision lives in the graph (TensorRT 11 networks are strongly typed).

    Ops and nodes a family marks as fragile stay fp32 with casts around them; the
    listed float outputs (logits) stay fp32 so downstream numerics do not change.
    Unlike fp32 export this holds the weights in memory once more while converting.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    patterns = spec.fp16_keep_fp32_node_patterns
    nodes = [n.name for n in proto.graph.node if any(p in n.name for p in patterns)]
    # The converter casts around fp32-kept nodes only where shape inference told it the
    # neighbours' types; ONNX shape inference cannot take protos over 2 GiB.
    small = sum(len(t.raw_data) for t in proto.graph.initializer) < (1 << 31) - (1 << 26)
    return convert_float_to_float16(proto, keep_io_types=list(spec.float_outputs_fp32),
                                    op_block_list=list(spec.fp16_keep_fp32_ops) or None,
                                    node_block_list=nodes or None, disable_shape_infer=not small)


def verify_graph(model: torch.nn.Module, spec: GraphSpec, onnx_path: Path, sizes: Sizes,
                 tolerance: float | None = None) -> float:
    """Max abs difference between PyTorch and ONNX Runtime at `sizes`.

    Raises when it exceeds `tolerance` times the output's magnitude (at least 1), so
    hidden states in the hundreds are held to the same relative precision as logits.
    """
    from NNDF.runtime.ort_session import OrtSession

    feed = spec.make_inputs(sizes)
    expected = run_torch((spec.make_reference or spec.make_module)(model).eval(), spec, feed)
    session = OrtSession(onnx_path)
    got = session.infer({k: v.numpy() for k, v in feed.items()})
    worst, scale = 0.0, 1.0
    for name in spec.output_names:
        if expected[name].shape != got[name].shape:
            raise AssertionError(f"{spec.name}:{name} shape {got[name].shape} != torch {expected[name].shape} at {sizes}")
        worst = max(worst, float(np.max(np.abs(expected[name] - got[name].astype(np.float32)), initial=0.0)))
        scale = max(scale, float(np.max(np.abs(expected[name]), initial=0.0)))
    limit = (spec.tolerance if tolerance is None else tolerance) * scale
    if worst > limit:
        raise AssertionError(f"exported {spec.name} differs from PyTorch by {worst:.3g} (> {limit}) at {sizes}")
    return worst


def exported(workdir: WorkingDir, subdir: tuple[str, ...], model: torch.nn.Module, spec: GraphSpec,
             source_key: dict, fp16: bool, verify: bool = True) -> Artifact:
    """The cached ONNX artifact for `spec`, exporting (and verifying) it if absent."""
    key = onnx_key(spec, source_key, fp16)
    path = workdir.artifact_dir(*subdir, "onnx", artifact_name(spec, fp16, key))

    def produce(tmp: Path) -> dict:
        with status(f"exporting {spec.name} ({'fp16' if fp16 else 'fp32'}) to ONNX"):
            extra = export_graph(model, spec, tmp, fp16)
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        if weights > VERIFY_MAX_WEIGHT_BYTES:
            # an ONNX Runtime session beside the model would double the export's memory; the
            # architecture's graphs are verified at tiny size by the tests
            extra["verified"] = f"skipped at export: {weights / 2**30:.1f} GiB of weights"
        elif verify and not fp16:
            errors = [verify_graph(model, spec, tmp / MODEL_FILE, s) for s in spec.verify_sizes]
            extra["verified"] = {"max_abs_diff": max(errors, default=0.0), "sizes": list(spec.verify_sizes)}
        return extra

    artifact = workdir.build(path, key, (MODEL_FILE,), produce)
    check_onnx_io(artifact.file(MODEL_FILE), spec)
    return artifact


def ort_optimized(source: Path, model_type: str, config, workdir, rotary: tuple | None = None) -> Path:
    """ONNX Runtime's transformer fusions (SkipLayerNormalization, FastGelu, ...) applied to an
    exported graph, its shape arithmetic folded (NNDF/export/onnx_shapes.py) and, given `rotary` =
    (torch model, positions), its rotary embeddings fused on the model's cos/sin table for that
    many positions (NNDF/export/onnx_rotary.py); cached beside it. The table is computed only when the
    graph is built: the source's digest already names the model and config it comes from. Only
    ONNX Runtime runs the result: the fused ops are its own contrib ops, so TensorRT keeps the
    plain export."""
    import onnxruntime as ort

    source = Path(source)
    key = {"source": source_identity(source), "model_type": model_type, "onnxruntime": ort.__version__, "shape_arithmetic": "folded",
           "rotary_positions": rotary[1] if rotary else None}
    target = source.parent.with_name(source.parent.name + "-ort")

    def produce(tmp: Path) -> dict:
        from onnxruntime.transformers.optimizer import optimize_model

        with status(f"applying ONNX Runtime's {model_type} fusions"):
            heads = config.num_attention_heads
            optimized = optimize_model(str(source), model_type=model_type, num_heads=heads,
                                       hidden_size=config.hidden_size, opt_level=0)
            folded = fold_shape_arithmetic(optimized.model)
            rotated = fuse_rotary(optimized.model, *rotary_tables(*rotary)) if rotary else 0
            optimized.save_model_to_file(str(tmp / MODEL_FILE), use_external_data_format=True,
                                         all_tensors_to_one_file=True)
        described = source_description(source)
        return {**described, "graph": f"{described['graph']} (onnxrt-fused)",
                "fusions": {k: v for k, v in optimized.get_fused_operator_statistics().items() if v},
                "shape_inputs_folded": folded, "rotary_embeddings_fused": rotated}

    return workdir.build(target, key, (MODEL_FILE,), produce).file(MODEL_FILE)
