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
from NNDF.export.onnx_weights import leave_on_disk, open_graph, save_graph, transposed
from NNDF.export.workdir import Artifact, DATA_FILE, MODEL_FILE, WorkingDir, source_description, source_identity
from NNDF.graphs.spec import GraphSpec, Sizes, check_onnx_io

OPSET = 17
EXPORTER_VERSION = 4                # bump when export code changes what it writes (4: fp16 always shape-inferred)
FP32_DATA_FILE = "model.fp32.data"  # an fp16 export's traced weights, read back one at a time as they are halved
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
    the file is one TensorRT's ONNX parser accepts as written. An fp16 graph is converted with its
    weights left on disk, and each is halved as it is copied into the final data file.
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
    if fp16:
        attach_weights(proto, module, out_dir / FP32_DATA_FILE)
        leave_on_disk(proto, out_dir)        # the converter retypes weights, and needs none of their values
        proto = to_fp16(proto, spec)
        cleaned = parser_clean(proto)
        save_graph(proto, graph_file)        # each weight read, halved and written alone
        os.remove(out_dir / FP32_DATA_FILE)
    else:
        attach_weights(proto, module, out_dir / DATA_FILE)
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
            for key, value in (("location", data_path.name), ("offset", offset), ("length", array.nbytes)):
                init.external_data.add(key=key, value=str(value))
            proto.graph.initializer.append(init)
            offset += array.nbytes
    del proto.graph.input[:]
    proto.graph.input.extend(keep)


def to_fp16(proto: onnx.ModelProto, spec: GraphSpec) -> onnx.ModelProto:
    """Half precision lives in the graph (TensorRT 11 networks are strongly typed).

    Ops and nodes a family marks as fragile stay fp32 with casts around them; the
    listed float outputs (logits) stay fp32 so downstream numerics do not change.
    Given a graph whose weights are left on disk, the converter only retypes them (it reads no
    values), and its shape inference, which places the casts around fp32-kept nodes, always runs:
    the proto is far below the 2 GiB that ONNX shape inference takes.
    """
    from onnxruntime.transformers import float16

    patterns = spec.fp16_keep_fp32_node_patterns
    nodes = [n.name for n in proto.graph.node if any(p in n.name for p in patterns)]
    # The converter decodes each retyped initializer only to take its shape, which its dims give.
    original = float16.make_value_info_from_tensor
    float16.make_value_info_from_tensor = lambda t: onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
    try:
        return float16.convert_float_to_float16(proto, keep_io_types=list(spec.float_outputs_fp32),
                                                op_block_list=list(spec.fp16_keep_fp32_ops) or None,
                                                node_block_list=nodes or None)
    finally:
        float16.make_value_info_from_tensor = original


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


FUSIONS_ON_DISK = ("gpt2",)   # ONNX Runtime model types whose fusions read no weight matrix (tests/test_export_memory.py)


def fold_weight_transposes(proto: onnx.ModelProto) -> int:
    """MatMul(x, Transpose(W)) -> MatMul(x, W transposed), for every 2-D weight W that only that
    Transpose reads (nn.Linear as traced); how many. This is what ONNX Runtime's first fusion
    (FusionConstantFold) does by reading every such weight into memory; here a weight left on disk
    is not read: it will be read transposed when the graph is saved (NNDF/export/onnx_weights.py)."""
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    folded = []
    for node in graph.node:
        weight = inits.get(node.input[0]) if node.op_type == "Transpose" and len(node.input) == 1 else None
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [1, 0])
        if weight is None or len(weight.dims) != 2 or perm != [1, 0] or len(readers[weight.name]) != 1:
            continue
        if any(r.op_type != "MatMul" or list(r.input).index(node.output[0]) != 1 for r in readers.get(node.output[0], [])):
            continue
        weight.CopyFrom(transposed(weight, weight.name))
        for reader in readers.get(node.output[0], []):
            reader.input[1] = weight.name
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    return len(folded)


def ort_optimized(source: Path, model_type: str, config, workdir, rotary: tuple | None = None) -> Path:
    """ONNX Runtime's transformer fusions (SkipLayerNormalization, FastGelu, ...) applied to an
    exported graph, its shape arithmetic folded (NNDF/export/onnx_shapes.py) and, given `rotary` =
    (torch model, positions), its rotary embeddings fused on the model's cos/sin table for that
    many positions (NNDF/export/onnx_rotary.py); cached beside it. The table is computed only when the
    graph is built: the source's digest already names the model and config it comes from. Only
    ONNX Runtime runs the result: the fused ops are its own contrib ops, so TensorRT keeps the
    plain export. For the model types in FUSIONS_ON_DISK the weights stay on disk throughout and are
    copied one at a time into the new file; the encoders' fusions (bert, vit) read the attention
    weights they pack together, so those graphs are loaded whole (at most 1.3 GB: BERT-large)."""
    import onnxruntime as ort

    source = Path(source)
    key = {"source": source_identity(source), "model_type": model_type, "onnxruntime": ort.__version__, "shape_arithmetic": "folded",
           "rotary_positions": rotary[1] if rotary else None}
    target = source.parent.with_name(source.parent.name + "-ort")

    def produce(tmp: Path) -> dict:
        from onnxruntime.transformers.optimizer import optimize_model

        with status(f"applying ONNX Runtime's {model_type} fusions"):
            on_disk = model_type in FUSIONS_ON_DISK
            proto = open_graph(source) if on_disk else onnx.load(str(source))
            transposes = fold_weight_transposes(proto) if on_disk else 0
            heads = config.num_attention_heads
            optimized = optimize_model(proto, model_type=model_type, num_heads=heads,
                                       hidden_size=config.hidden_size, opt_level=0)
            folded = fold_shape_arithmetic(optimized.model)
            rotated = fuse_rotary(optimized.model, *rotary_tables(*rotary)) if rotary else 0
            optimized.topological_sort()      # as ONNX Runtime's own save does, with its contrib domain
            if not any(o.domain == "com.microsoft" for o in optimized.model.opset_import):
                optimized.model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
            save_graph(optimized.model, tmp / MODEL_FILE)
        described = source_description(source)
        fusions = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
        return {**described, "graph": f"{described['graph']} (onnxrt-fused)", "fusions": fusions,
                "weight_transposes_folded": transposes, "shape_inputs_folded": folded, "rotary_embeddings_fused": rotated}

    return workdir.build(target, key, (MODEL_FILE,), produce).file(MODEL_FILE)
