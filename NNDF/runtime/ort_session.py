"""ONNX Runtime session: the CPU provider here, CUDA where onnxruntime-gpu is installed."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from NNDF.base.errors import UsageError
from NNDF.runtime.session import Handle, Session, regrouped_shape

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
    "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(double)": np.float64,
}


def providers_for(allow_cuda: bool) -> list[str]:
    """CUDA first where onnxruntime-gpu provides it (and --cpu did not rule it out), the CPU always.

    This is what is asked for, not what a session gets: get_available_providers() lists the CUDA
    provider whenever onnxruntime-gpu is installed, but the provider library needs cuDNN and cuBLAS
    at session creation; without them ONNX Runtime logs an error (hidden at our log level) and runs
    the session on the CPU. OrtSession therefore labels itself by the session's own providers."""
    if allow_cuda and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


@functools.cache
def preload_cuda_libraries() -> None:
    """Once per process, before the first CUDA session: onnxruntime.preload_dlls() (ONNX Runtime
    1.21+) loads the CUDA, cuBLAS and cuDNN libraries from the nvidia-* wheels PyTorch installs, so
    the CUDA provider finds them without LD_LIBRARY_PATH. A failure here only means the provider may
    not start, which OrtSession then notices and says."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as e:  # noqa: BLE001 -- any failure leaves the libraries to the system loader
        print(f"note: onnxruntime.preload_dlls() failed ({type(e).__name__}: {str(e)[:120]}); ONNX Runtime's "
              "CUDA provider will look for CUDA/cuDNN on the library path", file=sys.stderr)


_said_fallback = set()   # session files whose CPU fallback was reported, so a note is printed once each


class OrtSession(Session):
    """An ONNX Runtime session behind the Session contract.

    Device outputs (the KV cache) stay OrtValues on the session's device between steps, and beam
    reordering gathers them there with a one-node ONNX Runtime graph, so on the CUDA provider the
    cache never crosses to the host. Host inputs are cast to the graph's own input types, so an
    fp16 graph is fed fp16.
    """

    def __init__(self, path: str | os.PathLike, allow_cuda: bool = True, require_cuda: bool = False,
                 profile_prefix: str | None = None):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if profile_prefix is not None:     # ONNX Runtime's profiler: every run and node timed (benchmarks/profile_decode.py)
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        providers = providers_for(allow_cuda)
        if require_cuda and providers[0] != "CUDAExecutionProvider":
            raise UsageError("--require-cuda: ONNX Runtime here has no CUDA execution provider "
                             f"({', '.join(ort.get_available_providers())})",
                             "install onnxruntime-gpu (the .[gpu-cu12] extra) in place of onnxruntime, or drop --require-cuda")
        if providers[0] == "CUDAExecutionProvider":
            preload_cuda_libraries()
        try:
            self._session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # ORT raises its own exception types for corrupt files
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise UsageError(f"ONNX Runtime cannot load {path}: {first}", "re-export it or delete it (--cleanup)") from None
        self._model_path = str(path)
        self.path = Path(path)   # what this session runs (export-triton copies it)
        self._providers = tuple(self._session.get_providers())   # what the session got, not what was asked
        on_cuda = self._providers[0] == "CUDAExecutionProvider"
        if providers[0] == "CUDAExecutionProvider" and not on_cuda:
            why = ("ONNX Runtime's CUDA execution provider did not start for this session (usually cuDNN or "
                   "cuBLAS missing or of another CUDA major than onnxruntime-gpu's)")
            if require_cuda:
                raise UsageError(f"--require-cuda: {why}", "install the CUDA and cuDNN libraries onnxruntime-gpu "
                                 "was built for (`python run.py env` shows the versions), or drop --require-cuda")
            if str(path) not in _said_fallback:
                _said_fallback.add(str(path))
                print(f"note: {why}; onnxrt runs {Path(path).parent.name} on the CPU, and its results say cpu",
                      file=sys.stderr)
        self._device_type = "cuda" if on_cuda else "cpu"
        self._device_id = int(self._session.get_provider_options()["CUDAExecutionProvider"]["device_id"]) if on_cuda else 0
        self.device_name = f"cuda:{self._device_id}" if on_cuda else "cpu"
        self._inputs = {i.name: i for i in self._session.get_inputs()}
        self.input_names = list(self._inputs)
        self.output_names = [o.name for o in self._session.get_outputs()]
        self._regroup_buffers: dict[str, list] = {}    # input name -> [buffer, buffer, next] (regroup)

    def end_profiling(self) -> str:
        """Stop the profiler (a session made with profile_prefix) and return its JSON trace's path."""
        return self._session.end_profiling()

    def input_dtype(self, name: str) -> np.dtype:
        return np.dtype(_ORT_TYPES[self._inputs[name].type])

    def input_shape(self, name: str):
        return list(self._inputs[name].shape)

    def _bound(self, feed):
        """An IO binding with `feed` bound: handles as they are, host arrays cast to the graph's types."""
        binding = self._session.io_binding()
        for name, value in feed.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(value, dtype=self.input_dtype(name)))
        return binding

    def run(self, feed, host_outputs, device_outputs=()):
        binding = self._bound(feed)
        wanted = list(host_outputs) + list(device_outputs)
        for name in wanted:
            if name in host_outputs:
                binding.bind_output(name, "cpu")
            else:
                binding.bind_output(name, self._device_type, self._device_id)
        self._session.run_with_iobinding(binding)
        values = dict(zip(wanted, binding.get_outputs()))
        host = {n: values[n].numpy() for n in host_outputs}
        device = {n: values[n] for n in device_outputs}
        return host, device

    def run_into(self, feed, host_outputs, into):
        binding = self._bound(feed)
        for name in host_outputs:
            binding.bind_output(name, "cpu")
        for name, handle in into.items():
            binding.bind_ortvalue_output(name, handle)
        self._session.run_with_iobinding(binding)
        return {n: v.numpy() for n, v in zip(host_outputs, binding.get_outputs())}

    def slot_buffer(self, name: str, shape) -> Handle:
        if self._device_type != "cpu":
            return self.zeros(name, shape)
        # ONNX Runtime's allocator leaves the memory untouched, so pages are mapped only where slots are written
        return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), self.input_dtype(name))

    def leading_rows(self, handle: Handle, rows: int) -> Handle:
        if self._device_type != "cpu":
            raise NotImplementedError("buffer rows are viewed on the CPU only (the in-place cache graph runs there)")
        # rows along axis 0 of a C-ordered buffer are contiguous, and an OrtValue made from a numpy view on the
        # CPU uses that memory as it is
        return ort.OrtValue.ortvalue_from_numpy(handle.numpy()[:rows])

    def copy_slots(self, target, source, rows, at, slots, batch_axis, slot_axis) -> None:
        if self._device_type != "cpu":
            raise NotImplementedError("cache slots are copied on the CPU only (the in-place cache graph runs there)")
        # a CPU OrtValue's numpy() is a view of its memory, so this writes into `target` itself
        # row by row, with no gathered temporary (a regroup of 16 GPT2 rows: 109 ms through np.take)
        into, data = target.numpy(), source.numpy()
        index = [slice(None)] * data.ndim
        index[slot_axis] = slice(0, slots)
        for i, row in enumerate(rows):
            to, of = list(index), list(index)
            to[batch_axis], of[batch_axis] = at + i, int(row)
            into[tuple(to)] = data[tuple(of)]

    def zeros(self, name: str, shape) -> Handle:
        return ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, self.input_dtype(name)), self._device_type,
                                                self._device_id)

    def take(self, handle: Handle, indices: np.ndarray, axis: int = 0) -> Handle:
        gather = _gather_session(int(handle.element_type()), axis, self._providers)
        binding = gather.io_binding()
        binding.bind_ortvalue_input("data", handle)
        binding.bind_cpu_input("indices", np.ascontiguousarray(indices, dtype=np.int64))
        binding.bind_output("gathered", self._device_type, self._device_id)
        gather.run_with_iobinding(binding)
        return binding.get_outputs()[0]

    def regroup(self, name, parts, batch_axis, slot_axis, length) -> Handle:
        # An OrtValue on the CPU and its numpy view share memory, so this is one copy of each kept row, into
        # one of two buffers per input used in turn: the cache grows by a slot every step, so fresh arrays
        # would be mapped anew each time and page faults would cost more than the copy (measured: 160 ms
        # instead of 11 ms for 16 rows of 100 slots of GPT2). On CUDA the rows make a round trip through the
        # host (regrouping happens when rows join or leave, not at every step).
        arrays = [(handle.numpy(), rows) for handle, rows in parts]
        shape = regrouped_shape([a.shape for a, _ in arrays], sum(len(r) for _, r in arrays), batch_axis, slot_axis,
                                length)
        on_cpu = self._device_type == "cpu"
        out = self._reused(name, shape, arrays[0][0].dtype) if on_cpu else np.zeros(shape, arrays[0][0].dtype)
        at = 0
        for array, rows in arrays:
            n = min(length, array.shape[slot_axis])
            for row in rows:
                target, source = [slice(None)] * out.ndim, [slice(None)] * out.ndim
                target[batch_axis], source[batch_axis] = at, int(row)
                target[slot_axis], source[slot_axis] = slice(length - n, length), slice(array.shape[slot_axis] - n, None)
                out[tuple(target)] = array[tuple(source)]
                if on_cpu and n < length:
                    target[slot_axis] = slice(0, length - n)
                    out[tuple(target)] = 0
                at += 1
        return ort.OrtValue.ortvalue_from_numpy(out, self._device_type, self._device_id)

    def _reused(self, name: str, shape, dtype) -> np.ndarray:
        """An array of `shape` in the next of input `name`'s two buffers (grown by a quarter when too small)."""
        size = int(np.prod(shape))
        turn = self._regroup_buffers.setdefault(name, [None, None, 0])
        index = turn[2]
        turn[2] = 1 - index
        buffer = turn[index]
        if buffer is None or buffer.size < size or buffer.dtype != dtype:
            buffer = turn[index] = np.zeros(size + size // 4, dtype)
        return buffer[:size].reshape(shape)


@functools.cache
def _gather_session(elem: int, axis: int, providers: tuple[str, ...]) -> ort.InferenceSession:
    """A one-node graph, Gather(data, indices) on `axis`, that runs where the data lives
    (`elem` is the ONNX element type, as OrtValue.element_type() gives it)."""
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("Gather", ["data", "indices"], ["gathered"], axis=axis)], "take",
        [helper.make_tensor_value_info("data", elem, None), helper.make_tensor_value_info("indices", onnx.TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("gathered", elem, None)])
    # IR 8: what every ONNX Runtime this project supports loads (onnx's helper would stamp the newest
    # IR version, which an older ONNX Runtime refuses)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=list(providers))
