"""A TensorRT engine as a Session, through the named-tensor API of TensorRT 10 and 11.

Device buffers are torch tensors on `self.device`: the KV cache a step returns
is handed to the next step by address, and beam search reorders it with
`index_select` on the device, so the cache never visits the host. Only the
outputs the caller asks for on the host (the logits) are copied back.

With --use-cuda-graph, buffers are reused and steps replayed as CUDA graphs
(NNDF/runtime/cuda_graphs.py). A device output then lives in one of two buffers per
output name, and the session's next run that does not read it writes over it:
a step's presents survive the step that reads them as pasts, an encoder's output
lasts until the encoder runs again. That is all the generation loops need.
Without graphs an output lives as long as the caller keeps it.

Engines of cached decoders have a profile per phase (trt_profiles.optimization_profiles);
each step's profile is chosen from its shapes, and each profile has an execution context of its
own that never leaves it (see "Profiles and contexts" below). All work is enqueued on one
dedicated stream per device (trt_env.stream_for).

Profiles and contexts (issue 24). A cached decoder alternates phases: the prompt step on the
context profile, every decode step on the generation profile. One execution context serving both
would switch profiles twice per generation, and each switch costs: "When an optimization profile
is switched via this API, TensorRT may require that data is copied via cudaMemcpyAsync"
(set_optimization_profile_async, TensorRT 10.16's bindings), it invalidates every input shape of
the context (so all are set again), and the next enqueue re-derives the context's shape-dependent
state. The original demo kept one context per profile, as TF-TRT does
(trt_shape_optimization_profiles.cc: "one context for each profile"). So does this runner: a
context per profile, created the first time its profile is needed and switched once, at creation;
all contexts share one USER_MANAGED activation buffer (the engine's largest need,
device_memory_size_v2), which TensorRT allows for contexts that never run at the same time, and
ours all run in order on one stream, so the extra contexts cost no activation memory. Input shapes
already set on a context are not set again. The stand-in counts switches and set_input_shape
calls (tests/test_trt_profiles.py bounds them over a generation).

Measurement plan, for a GPU (none here, so the choice above was made from the documented costs,
not measured): gpt2 at batch 1, 128 prompt + 64 new tokens, fp16, cache on, under
`nsys profile --trace=cuda,nvtx`: (a) this runner, (b) the same with one context that switches
(`TrtSession._context_for` returning one shared context). Compare the median decode-step time
and the prompt step's, and count cudaMemcpyAsync calls issued by setOptimizationProfileAsync
per generation (expected: 2 for (b), 0 for (a) after the first generation). If (a) is not
faster, it is still not slower and uses no more memory; keep it unless (b) wins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from NNDF.base.config import TrtSettings
from NNDF.base.errors import UsageError
from NNDF.graphs.spec import GraphSpec
from NNDF.runtime import trt_env
from NNDF.runtime.cuda_graphs import GraphRunner
from NNDF.runtime.session import Handle, Session, regrouped_shape
from NNDF.runtime.trt_profiles import AXIS_FIX, Profile, as_profiles, check_sizes, envelope_of


# Where buffers live. Production runs on the current CUDA device; tests swap this default.
DEFAULT_DEVICE = torch.device("cuda")

_NUMPY_OF = {torch.float32: np.float32, torch.float16: np.float16, torch.int32: np.int32,
             torch.int64: np.int64, torch.bool: np.bool_}


def _torch_dtypes(trt) -> dict:
    return {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32,
            trt.DataType.INT64: torch.int64, trt.DataType.BOOL: torch.bool}


def _resolve(device: torch.device) -> torch.device:
    """cuda -> cuda:N, so tensors' devices compare equal to ours."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


class TrtSession(Session):
    def __init__(self, engine_path: str | Path, spec: GraphSpec, ranges: Profile | tuple[Profile, ...],
                 settings: TrtSettings, *, device: torch.device | None = None):
        trt = self._trt = trt_env.require_tensorrt()
        self.path, self.spec = Path(engine_path), spec
        self.device = _resolve(device if device is not None else DEFAULT_DEVICE)
        self.device_name = str(self.device)
        self._runtime = trt.Runtime(trt_env.logger_for(trt))   # kept: the engine must not outlive it
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise UsageError(f"engine {self.path} was built by another TensorRT version or is corrupt",
                             "delete it (or run with --cleanup) so it is rebuilt")
        self._check_io_names(trt)
        self.input_names, self.output_names = spec.input_names, spec.output_names
        self._dtypes = self._tensor_dtypes(trt)
        self._shapes = {n: tuple(self._engine.get_tensor_shape(n)) for n in self.input_names}
        self._profiles = self._profile_limits()       # per optimization profile, what it accepts
        self._limits = envelope_of(self._profiles)    # what some profile accepts
        self._check_covers(as_profiles(ranges))
        self._stream = trt_env.stream_for(self.device)
        with self._stream.active():
            self._scratch = torch.zeros(256, dtype=torch.uint8, device=self.device)   # address for empty tensors
            # every context (one per profile, and in graph mode one per graph) shares this activation memory
            self._shared_memory = torch.empty(max(int(self._engine.device_memory_size_v2), 1), dtype=torch.uint8,
                                              device=self.device)
        # profile -> its context and the input shapes set on it. In graph mode these contexts only answer
        # output shapes; graphs run on contexts of their own.
        self._contexts: dict[int, tuple[object, dict[str, tuple]]] = {}
        self._context_for(0)       # a context exists from the start (and a bad engine fails here)
        self._graphs = (GraphRunner(self.device, self._stream, self._new_context, self._bind, self._enqueue)
                        if settings.use_cuda_graph else None)

    def _new_context(self):
        context = self._engine.create_execution_context(self._trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if context is None:
            raise UsageError(f"TensorRT could not create an execution context for {self.path}",
                             "free GPU memory or use a smaller batch or profile")
        context.set_device_memory(self._shared_memory.data_ptr(), self._shared_memory.numel())
        return context

    def _context_for(self, profile: int) -> tuple[object, dict[str, tuple]]:
        """The context that runs steps of `profile`, on that profile for good, and the input shapes set
        on it so far (see "Profiles and contexts" above)."""
        if profile not in self._contexts:
            context = self._new_context()
            if context.active_optimization_profile != profile:    # once per context: it starts on profile 0
                if not context.set_optimization_profile_async(profile, self._stream.handle):
                    raise RuntimeError(f"TensorRT refused optimization profile {profile} of {self.path}; "
                                       "see its log above")
            self._contexts[profile] = (context, {})
        return self._contexts[profile]

    # ------------------------------------------------------------------ checks at load
    def _check_io_names(self, trt) -> None:
        """A wrong --decoder-engine (other model, other cache setting) is caught here."""
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = {n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
        outputs = set(names) - inputs
        if inputs == set(self.spec.input_names) and outputs == set(self.spec.output_names):
            return
        expected = set(self.spec.input_names) | set(self.spec.output_names)
        missing, unexpected = sorted(expected - set(names)), sorted(set(names) - expected)
        wrong_mode = sorted((inputs & set(self.spec.output_names)) | (outputs & set(self.spec.input_names)))
        found = ", ".join(f"{what} {names[:3]}" for what, names in
                          (("missing", missing), ("unexpected", unexpected), ("wrong direction", wrong_mode)) if names)
        raise UsageError(f"engine {self.path} does not fit the {self.spec.name} graph: {found}",
                         "pass the engine built for this model and --use-cache setting, or drop the --*-engine flag")

    def _tensor_dtypes(self, trt) -> dict[str, torch.dtype]:
        table = _torch_dtypes(trt)
        dtypes = {}
        for name in (*self.input_names, *self.output_names):
            dtype = self._engine.get_tensor_dtype(name)
            if dtype not in table:
                raise UsageError(f"engine {self.path} has {name} in {dtype}, which the trt backend cannot feed",
                                 "export the graph with this toolkit")
            dtypes[name] = table[dtype]
        return dtypes

    def _profile_limits(self) -> tuple[Profile, ...]:
        """Per optimization profile and axis name, the (min, opt, max) it accepts; a static dim's fixed size
        counts as a range of one."""
        dynamic = any(-1 in self._shapes[n] for n in self.input_names)
        count = self._engine.num_optimization_profiles if dynamic else 1
        return tuple(self._limits_of(index) for index in range(count))

    def _limits_of(self, index: int) -> Profile:
        limits: Profile = {}
        for name in self.input_names:
            dims = self._shapes[name]
            axes = self.spec.inputs[name]
            profile = self._engine.get_tensor_profile_shape(name, index) if -1 in dims else [dims] * 3
            for i, dim in enumerate(dims):
                if i not in axes:
                    if dim < 0:
                        raise UsageError(f"engine {self.path} has a dynamic dimension {i} in {name} that the runner "
                                         "does not size", "build the engine from this toolkit's ONNX export")
                    continue
                lo, opt, hi = (int(p[i]) for p in profile)
                if axes[i] in limits:   # several inputs share an axis: the engine accepts the overlap
                    old = limits[axes[i]]
                    lo, opt, hi = max(lo, old[0]), old[1], min(hi, old[2])
                limits[axes[i]] = (lo, opt, hi)
        return limits

    def _check_covers(self, needed: tuple[Profile, ...]) -> None:
        """The run's sizes (all phases together) must be inside what the engine's profiles accept.
        Callers may pass the phases or one envelope (a Triton repository records the envelope); a step
        that fits no single profile is refused when it comes (`_profile_for`)."""
        have = self._limits
        for axis, (lo, _, hi) in envelope_of(needed).items():
            if axis in have and not (have[axis][0] <= lo and hi <= have[axis][2]):
                raise UsageError(f"engine {self.path} accepts {axis} {have[axis][0]}..{have[axis][2]} but this run "
                                 f"needs {lo}..{hi}",
                                 f"rebuild it for this run (drop the --*-engine flag), or {AXIS_FIX[axis]}")

    def _profile_for(self, sizes: dict[str, int]) -> int:
        """The first optimization profile that accepts every size of this step (phases are disjoint)."""
        for index, limits in enumerate(self._profiles):
            if all(limits[a][0] <= v <= limits[a][2] for a, v in sizes.items() if a in limits):
                return index
        self.check_fits(sizes, f"this {self.spec.name} step")      # names the flag if a size is out of every range
        raise UsageError(f"this {self.spec.name} step needs {sizes}, which no single optimization profile of "
                         f"{self.path} covers", "rebuild the engine for this run (drop the --*-engine flag)")

    # ------------------------------------------------------------------ Session
    def input_dtype(self, name: str) -> np.dtype:
        return np.dtype(_NUMPY_OF[self._dtypes[name]])

    def input_shape(self, name: str):
        axes = self.spec.inputs[name]
        return [axes.get(i) if d < 0 else d for i, d in enumerate(self._shapes[name])]

    def run(self, feed, host_outputs: Sequence[str], device_outputs: Sequence[str] = ()):
        missing = [n for n in self.input_names if n not in feed]
        if missing:
            raise ValueError(f"{self.spec.name} needs inputs {missing}")
        with self._stream.active():
            inputs = {n: self._input(n, feed[n]) for n in self.input_names}
            self._check_fits(inputs)
            context, shapes_set = self._context_for(self._profile_for(self._sizes(inputs)))
            self._set_shapes(context, inputs, shapes_set)
            outputs = {}
            for name in self.output_names:   # TensorRT needs an address for every output, wanted or not
                shape = tuple(context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise RuntimeError(f"TensorRT could not infer the shape of {name} from the input shapes")
                outputs[name] = (self._graphs.output(name, shape, self._dtypes[name], inputs) if self._graphs is not None
                                 else torch.empty(shape, dtype=self._dtypes[name], device=self.device))
            if self._graphs is None:
                self._set_addresses(context, {**inputs, **outputs})
                self._enqueue(context)
            elif not self._graphs.execute(inputs, outputs):
                self._graphs = None      # not capturable: later steps run plainly (this one has run)
            self._stream.synchronize()
            host = {n: outputs[n].cpu().numpy() for n in host_outputs}
        return host, {n: outputs[n] for n in device_outputs}

    def _input(self, name: str, value) -> torch.Tensor:
        if self._graphs is not None:
            return self._graphs.input(name, value, self._dtypes[name])
        return self._on_device(name, value)

    def _set_shapes(self, context, inputs: dict[str, torch.Tensor], shapes_set: dict[str, tuple] | None = None) -> None:
        """Select the step's optimization profile on `context` if it is not on it, then set the input
        shapes that differ from `shapes_set` (those already set on it; None: set every one).

        Each execution context has its own selected profile (0 when created). A switch is enqueued on
        the stream (TensorRT may copy profile data) and invalidates the context's input shapes, so all
        are set after it. The per-profile contexts never switch after creation; a graph's context
        (cuda_graphs) switches once, when it is first bound."""
        profile = self._profile_for(self._sizes(inputs))
        if context.active_optimization_profile != profile:
            if not context.set_optimization_profile_async(profile, self._stream.handle):
                raise RuntimeError(f"TensorRT refused optimization profile {profile} of {self.path}; see its log above")
            if shapes_set is not None:
                shapes_set.clear()         # the switch invalidated them
        for name, tensor in inputs.items():
            shape = tuple(tensor.shape)
            if shapes_set is not None and shapes_set.get(name) == shape:
                continue
            if not context.set_input_shape(name, shape):
                raise RuntimeError(f"TensorRT rejected shape {shape} for {name}; see its log above")
            if shapes_set is not None:
                shapes_set[name] = shape

    def _set_addresses(self, context, tensors: dict[str, torch.Tensor]) -> None:
        for name, tensor in tensors.items():
            # an empty tensor may have a null address, which TensorRT rejects; any valid one will do
            address = tensor.data_ptr() if tensor.numel() else self._scratch.data_ptr()
            if not context.set_tensor_address(name, address):
                raise RuntimeError(f"TensorRT rejected the address of {name}; see its log above")

    def _bind(self, context, inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        self._set_shapes(context, inputs)
        self._set_addresses(context, {**inputs, **outputs})

    def _enqueue(self, context) -> None:
        if not context.execute_async_v3(self._stream.handle):
            raise RuntimeError(f"TensorRT failed to run {self.path}; see its log above")

    def _on_device(self, name: str, value) -> torch.Tensor:
        dtype = self._dtypes[name]
        if isinstance(value, torch.Tensor):
            if value.device == self.device and value.dtype == dtype and value.is_contiguous():
                return value
            return value.to(device=self.device, dtype=dtype).contiguous()
        return torch.from_numpy(np.ascontiguousarray(value)).to(device=self.device, dtype=dtype)

    def check_fits(self, sizes: dict[str, int], what: str) -> None:
        check_sizes(self._limits, sizes, what)

    def _sizes(self, inputs: dict[str, torch.Tensor]) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for name, tensor in inputs.items():
            for i, axis in self.spec.inputs[name].items():
                sizes.setdefault(axis, int(tensor.shape[i]))
        return sizes

    def _check_fits(self, inputs: dict[str, torch.Tensor]) -> None:
        self.check_fits(self._sizes(inputs), f"this {self.spec.name} step")

    @property
    def fixed_shape_steps(self) -> bool:
        return self._graphs is not None

    def largest(self, axis: str) -> int | None:
        return self._limits[axis][2] if axis in self._limits else None

    def cache_buffer(self, name: str, shape) -> Handle:
        if self._graphs is None:
            return self.zeros(name, shape)
        with self._stream.active():
            return self._graphs.persistent(name, tuple(shape), self._dtypes[name])

    def right_align_into(self, target, source, axis, index=None, batch_axis=0) -> None:
        with self._stream.active():
            n = min(target.shape[axis], source.shape[axis])
            rows = source.narrow(axis, source.shape[axis] - n, n)
            if index is not None:    # a new tensor, so target may be source itself
                rows = rows.index_select(batch_axis, torch.as_tensor(np.asarray(index, np.int64), device=self.device))
            target.narrow(axis, target.shape[axis] - n, n).copy_(rows)

    def regroup(self, name, parts, batch_axis, slot_axis, length) -> Handle:
        with self._stream.active():
            shape = regrouped_shape([h.shape for h, _ in parts], sum(len(r) for _, r in parts), batch_axis, slot_axis,
                                    length)
            out = torch.zeros(shape, dtype=parts[0][0].dtype, device=self.device)
            at = 0
            for handle, rows in parts:
                n = min(length, handle.shape[slot_axis])
                index = torch.as_tensor(np.asarray(rows, np.int64), device=self.device)
                kept = handle.narrow(slot_axis, handle.shape[slot_axis] - n, n).index_select(batch_axis, index)
                out.narrow(batch_axis, at, len(rows)).narrow(slot_axis, length - n, n).copy_(kept)
                at += len(rows)
            return out

    def zeros(self, name: str, shape) -> Handle:
        with self._stream.active():
            return torch.zeros(tuple(shape), dtype=self._dtypes[name], device=self.device)

    def take(self, handle: Handle, indices: np.ndarray, axis: int = 0) -> Handle:
        with self._stream.active():
            index = torch.as_tensor(np.asarray(indices, dtype=np.int64), device=self.device)
            if self._graphs is not None:
                return self._graphs.take(handle, index, axis)
            return handle.index_select(axis, index)
