"""Rewrite an ONNX graph while its weights stay on disk, then stream them into the new file.

A rewrite of a multi-GB graph needs the weights' names, types and shapes, almost never their
values. ONNX's loader, ONNX Runtime's optimizer and its quantizer all read every weight into memory
first and then copy them (ONNX Runtime's fusions of a 4.4 GB TinyLlama were OOM-killed at 24 GB).
Here a graph is opened without its matrices (`open_graph`): each weight of two or more dimensions
is an initializer that keeps its dims and type and records where its bytes are, its location a
name that is no file, so a pass that tries to read it fails loudly instead of loading it. Vectors
(norm weights, biases: kilobytes) are read, because shape inference reads the operands of every
Add and Mul it meets.

Passes that change only structure (constant and shape folding, ONNX Runtime's fusions, the fp16
converter, which only retypes an initializer it is handed without data) run on that light graph;
a transposed weight is one that will be read transposed (`transposed`). Passes that change a
weight's values (quantization) read that one weight (`read`), compute, and put the result in the
new data file (`WeightFile`) before the next. `save_graph` then writes the rest: a weight still in
its old file is copied over (transposed, or cast when a pass retyped it, as the fp16 converter
does), so a save holds one tensor at a time, and the graph file holds the nodes and names.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import load_external_data_for_tensor

ON_DISK = "weights-left-on-disk"      # the location of a weight not read: no file, so reading it fails
INLINE_MAX_BYTES = 1024               # larger initializers go to the data file (onnx.save_model's threshold)
ALIGN = 64                            # tensors start on 64-byte offsets, so runtimes may map them in place
CAST_SLICE = 1 << 20                  # elements cast at once
_PACKED = (TensorProto.INT4, TensorProto.UINT4, TensorProto.BFLOAT16)   # numpy has no such type


def _props(t: TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in (*t.external_data, *t.metadata_props)}


def on_disk(t: TensorProto) -> bool:
    """Whether `t` is a weight left in a file (its bytes not in memory)."""
    return t.data_location == TensorProto.EXTERNAL and any(e.key == "location" and e.value == ON_DISK
                                                            for e in t.external_data)


def _left(t: TensorProto, path: Path, offset: int, length: int, stored_as: int, dims: list[int],
          transpose: bool = False) -> None:
    """Make `t` a weight left in `path` at `offset`, stored there as `stored_as` of `dims` (read
    transposed when `transpose`)."""
    t.ClearField("raw_data")
    del t.external_data[:]
    del t.metadata_props[:]
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", ON_DISK), ("offset", str(offset)), ("length", str(length))):
        t.external_data.add(key=key, value=value)
    for key, value in (("source", str(path)), ("stored_as", str(stored_as)), ("stored_dims", ",".join(map(str, dims))),
                       ("transpose", "1" if transpose else "")):
        t.metadata_props.add(key=key, value=value)


def leave_on_disk(proto: onnx.ModelProto, base_dir: Path) -> int:
    """Turn every external initializer of `proto` (a graph loaded without its data, whose files are
    under `base_dir`) into a weight left on disk, reading the vectors in; how many were left."""
    left = 0
    for t in proto.graph.initializer:
        if t.data_location != TensorProto.EXTERNAL or on_disk(t):
            continue
        if len(t.dims) <= 1:
            load_external_data_for_tensor(t, str(base_dir))
            t.data_location = TensorProto.DEFAULT
            del t.external_data[:]
            continue
        props = _props(t)
        length = int(props.get("length") or _nbytes(t.data_type, t.dims))
        _left(t, Path(base_dir).resolve() / props["location"], int(props.get("offset", 0)), length, t.data_type,
              list(t.dims))
        left += 1
    return left


def open_graph(path: Path) -> onnx.ModelProto:
    """The graph at `path` with its matrices left on disk: megabytes, however large the model."""
    proto = onnx.load(str(path), load_external_data=False)
    leave_on_disk(proto, Path(path).parent)
    return proto


def _nbytes(data_type: int, dims) -> int:
    count = int(np.prod(list(dims), dtype=np.int64))
    if data_type in (TensorProto.INT4, TensorProto.UINT4):
        return (count + 1) // 2
    return count * helper.tensor_dtype_to_np_dtype(data_type).itemsize


def _stored_bytes(t: TensorProto) -> np.ndarray:
    """The bytes of an on-disk weight as they are in its file, read alone."""
    props = _props(t)
    length = int(props["length"])
    with open(props["source"], "rb") as f:
        f.seek(int(props["offset"]))
        raw = np.fromfile(f, dtype=np.uint8, count=length)
    if raw.size != length:
        raise OSError(f"{props['source']} ends inside weight {t.name}")
    return raw


def read(t: TensorProto) -> np.ndarray:
    """The values of initializer `t` as the graph now types it: an inline tensor decoded, an on-disk
    weight read alone (and cast, when a pass retyped it from fp32 to fp16)."""
    if not on_disk(t):
        return numpy_helper.to_array(t)
    props = _props(t)
    stored_as, dims = int(props["stored_as"]), [int(d) for d in props["stored_dims"].split(",") if d]
    raw = _stored_bytes(t)
    if stored_as in _PACKED:
        values = numpy_helper.to_array(TensorProto(dims=dims, data_type=stored_as, raw_data=raw.tobytes()))
    else:
        values = raw.view(helper.tensor_dtype_to_np_dtype(stored_as)).reshape(dims)
    if props["transpose"]:
        values = np.ascontiguousarray(values.T)
    if stored_as == t.data_type:
        return values
    if (stored_as, t.data_type) == (TensorProto.FLOAT, TensorProto.FLOAT16):
        return _halved(values)
    raise ValueError(f"weight {t.name} is stored as {TensorProto.DataType.Name(stored_as)} and cannot be "
                     f"read as {TensorProto.DataType.Name(t.data_type)}")


def _halved(values: np.ndarray) -> np.ndarray:
    """fp32 -> fp16 as ONNX Runtime's fp16 converter halves an initializer (its own clamping of tiny
    and huge values), in slices, so its temporaries stay small beside a large tensor."""
    from onnxruntime.transformers.float16 import convert_np_to_float16

    flat = values.reshape(-1)
    out = np.empty(flat.shape, np.float16)
    for start in range(0, flat.size, CAST_SLICE):
        out[start:start + CAST_SLICE] = convert_np_to_float16(flat[start:start + CAST_SLICE])
    return out.reshape(values.shape)


def _file_bytes(t: TensorProto) -> bytes | np.ndarray:
    """What goes into a data file for `t`: its raw bytes (INT4 packed as ONNX packs it)."""
    if on_disk(t):
        props = _props(t)
        return _stored_bytes(t) if int(props["stored_as"]) == t.data_type and not props["transpose"] else read(t)
    if t.HasField("raw_data"):
        return t.raw_data
    return numpy_helper.to_array(t)


def data_file(graph_file: Path) -> Path:
    """Where a graph file's weights go: model.onnx -> model.onnx.data, as ONNX names them."""
    return Path(graph_file).with_name(Path(graph_file).name + ".data")


class WeightFile:
    """The data file of a graph being written (`path`, usually data_file(its graph)), filled one tensor
    at a time."""

    def __init__(self, path: Path):
        self.path = Path(path).resolve()
        self._file = open(self.path, "wb")
        self.offset = 0

    def __enter__(self) -> "WeightFile":
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()

    def _write(self, data: bytes | np.ndarray) -> tuple[int, int]:
        pad = -self.offset % ALIGN
        self._file.write(b"\0" * pad)
        start = self.offset + pad
        if isinstance(data, np.ndarray):
            np.ascontiguousarray(data).tofile(self._file)
            length = data.nbytes
        else:
            self._file.write(data)
            length = len(data)
        self.offset = start + length
        return start, length

    def holds(self, t: TensorProto) -> bool:
        props = _props(t)
        return (on_disk(t) and props["source"] == str(self.path) and int(props["stored_as"]) == t.data_type
                and not props["transpose"])

    def store(self, t: TensorProto) -> TensorProto:
        """`t` with its bytes in this file: a new initializer that only refers to them (one of 1 KiB or
        less stays inline, `t` itself). A new one, because a protobuf message keeps the memory of bytes it
        once held for as long as it lives, which would keep every tensor a rewrite made."""
        small = not on_disk(t) and _nbytes(t.data_type, t.dims) <= INLINE_MAX_BYTES
        if self.holds(t) or small or t.data_type == TensorProto.STRING:
            return t
        return self._stub(t.name, t.data_type, list(t.dims), self._write(_file_bytes(t)))

    def put(self, name: str, values: np.ndarray) -> TensorProto:
        """A new initializer `name` holding `values`, written now (inline if 1 KiB or less)."""
        if values.nbytes <= INLINE_MAX_BYTES:
            return numpy_helper.from_array(np.ascontiguousarray(values), name)
        return self._stub(name, helper.np_dtype_to_tensor_dtype(values.dtype), list(values.shape), self._write(values))

    def _stub(self, name: str, data_type: int, dims: list[int], written: tuple[int, int]) -> TensorProto:
        new = TensorProto(name=name, dims=dims, data_type=data_type)
        _left(new, self.path, written[0], written[1], data_type, dims)
        return new


def store_inline(t: TensorProto) -> TensorProto:
    """Where a rewrite given no WeightFile keeps a new tensor: in the graph itself (small graphs, tests)."""
    return t


def transposed(t: TensorProto, name: str) -> TensorProto:
    """A new initializer `name` holding the 2-D weight `t` transposed: for a weight on disk, one that
    reads it transposed when it is read or saved (nothing is read now), else computed."""
    if not on_disk(t):
        return numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(t).T), name)
    props = _props(t)
    new = TensorProto(name=name, dims=list(reversed(t.dims)), data_type=t.data_type)
    _left(new, Path(props["source"]), int(props["offset"]), int(props["length"]), int(props["stored_as"]),
          [int(d) for d in props["stored_dims"].split(",")], transpose=not props["transpose"])
    return new


def save_graph(proto: onnx.ModelProto, graph_file: Path, weights: WeightFile | None = None) -> None:
    """Write `proto` to `graph_file` with every initializer over 1 KiB in data_file(graph_file): those a
    rewrite already put there stay, every other one is copied (or cast) from where it is, one at a
    time. `weights` is that data file if a rewrite has been putting tensors into it (else opened here)."""
    target = data_file(graph_file).resolve()
    if weights is None and any(on_disk(t) and _props(t)["source"] == str(target) for t in proto.graph.initializer):
        raise ValueError(f"saving over {target} would overwrite the weights the graph reads from it")
    with weights or WeightFile(target) as weights:
        for t in proto.graph.initializer:
            stored = weights.store(t)
            if stored is not t:
                t.CopyFrom(stored)
    for t in proto.graph.initializer:
        if on_disk(t):    # now in that file: a plain external reference
            props = _props(t)
            del t.external_data[:]
            del t.metadata_props[:]
            for key, value in (("location", weights.path.name), ("offset", props["offset"]), ("length", props["length"])):
                t.external_data.add(key=key, value=value)
    if weights.offset == 0:
        os.remove(weights.path)
    onnx.save_model(proto, str(graph_file))


def largest_bytes(proto: onnx.ModelProto) -> int:
    """Bytes of the graph's largest initializer: what a streamed rewrite holds at once, a few times."""
    return max((_nbytes(t.data_type, t.dims) for t in proto.graph.initializer), default=0)
