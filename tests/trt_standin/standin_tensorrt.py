"""A CPU stand-in for the `tensorrt` Python module (TensorRT 10 or 11), for tests only.

Load it with `trt_standin.load(version)`: every load is a fresh module named
`tensorrt` whose `__version__` is `version`, with that version's enum members.
It offers only the API surface the toolkit uses, under the real names
(tests/test_trt_api_names.py checks every public name here against the string
tables of the real bindings), and has no catch-all: anything else, such as the
removed bindings API, is an AttributeError as on the real module, and the
classes have __slots__ so an unknown attribute cannot be set either.

Parsing enforces TensorRT 10's ONNX operator support matrix
(tests/trt_standin/onnx_support.py): a graph the real parser would refuse fails
here with the node and operator named.

"Building" records the ONNX model, the IO tensors and the optimization profiles
in the plan bytes. "Executing" runs that model with ONNX Runtime on the host
memory at the addresses the caller set, after enforcing TensorRT's rules:
every input shape set and inside the selected optimization profile, every IO tensor given a non-null
address, and (the stand-in's device memory being torch CPU tensors) every
address inside a live tensor's storage with room for the tensor's bytes.
Violations are logged as TensorRT logs them and make the call return False.

CUDA graphs: while `_capture` is a list (the test stream's capture sets it),
execute_async_v3 records its context, the version of that context's input
shapes and its addresses instead of running,
as stream capture records kernels; `_Graph.replay()` runs what was recorded.
TensorRT's rules are enforced: the first enqueue after an input shape change is
never the captured one, and a graph whose context has since changed shape is
not replayed (real TensorRT would run it with the wrong state; the stand-in
raises, so a test sees it).
"""

import ctypes as _ctypes
import enum as _enum
import gc as _gc
import json as _json
import struct as _struct
import sys as _sys
import weakref as _weakref

import numpy as _np
import onnx as _onnx
import onnxruntime as _ort
import torch as _torch
from trt_standin.onnx_support import parser_problems as _parser_problems

__version__ = _VERSION  # noqa: F821 -- put into the module's namespace by trt_standin.load before it runs
_MAJOR = int(__version__.split(".")[0])
_PLAN_MAGIC = b"TRT-STANDIN-PLAN\x00"
_CACHE_MAGIC = b"TRT-STANDIN-TIMING\x00"

_errors = []      # every error logged, so tests can assert on them
_warnings = []    # every warning logged, likewise
_builds = []      # the ONNX path of every engine built
_capture = None   # a list while a CUDA graph is being captured
_capturable = True    # False: engines behave like ones TensorRT cannot capture (e.g. data-dependent shapes)
# What a real run pays for, counted so tests can bound it: optimization profile switches (each may
# cudaMemcpyAsync profile data and invalidates the context's shapes) and set_input_shape calls.
_counts = {"profile_switches": 0, "set_input_shape": 0, "contexts": 0}
_DEVICE_MEMORY = 4096     # bytes of activation memory every stand-in engine asks for


# --------------------------------------------------------------------------- logging and enums
class Logger:
    class Severity(_enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    # the real module copies the severities onto Logger too (tensorrt/__init__.py)
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = Severity

    __slots__ = ("min_severity",)

    def __init__(self, min_severity=Severity.WARNING):
        self.min_severity = min_severity

    def log(self, severity, msg):
        if severity <= self.min_severity:
            print(f"[TRT stand-in] [{Logger.Severity(severity).name}] {msg}", file=_sys.stderr)


def _error(logger, message):
    _errors.append(message)
    logger.log(Logger.ERROR, message)


def _warn(logger, message):
    _warnings.append(message)
    logger.log(Logger.WARNING, message)


# What TensorRT 10 logs on every enqueueV3 on the legacy default stream.
_DEFAULT_STREAM_WARNING = ("Using default stream in enqueueV3() may lead to performance issues due to additional calls "
                          "to cudaStreamSynchronize() by TensorRT to ensure correct synchronization. Please use "
                          "non-default stream instead.")


class DataType(_enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT32 = 3
    BOOL = 4
    INT64 = 8


class TensorIOMode(_enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(_enum.IntEnum):
    WORKSPACE = 0


class ProfilingVerbosity(_enum.IntEnum):
    LAYER_NAMES_ONLY = 0
    DETAILED = 2


class ExecutionContextAllocationStrategy(_enum.IntEnum):
    STATIC = 0
    ON_PROFILE_CHANGE = 1
    USER_MANAGED = 2


class BuilderFlag(_enum.IntEnum):
    """Only what the toolkit uses. TF32 is on by default in a new builder config, as in TensorRT."""

    TF32 = 6


class NetworkDefinitionCreationFlag(_enum.IntEnum):
    STRONGLY_TYPED = 1


if _MAJOR == 10:
    class PreviewFeature(_enum.IntEnum):
        PROFILE_SHARING_0806 = 0
else:
    class PreviewFeature(_enum.IntEnum):
        """11 removed PROFILE_SHARING_0806; its remaining features are not used by the toolkit."""


_FROM_ONNX = {_onnx.TensorProto.FLOAT: DataType.FLOAT, _onnx.TensorProto.FLOAT16: DataType.HALF,
              _onnx.TensorProto.INT32: DataType.INT32, _onnx.TensorProto.INT64: DataType.INT64,
              _onnx.TensorProto.BOOL: DataType.BOOL}
_NUMPY = {DataType.FLOAT: _np.float32, DataType.HALF: _np.float16, DataType.INT32: _np.int32,
          DataType.INT64: _np.int64, DataType.BOOL: _np.bool_}


class Dims(tuple):
    __slots__ = ()


class IHostMemory:
    __slots__ = ("_data",)

    def __init__(self, data):
        self._data = bytes(data)

    @property
    def nbytes(self):
        return len(self._data)

    def __bytes__(self):   # stands in for the real object's buffer protocol
        return self._data


# --------------------------------------------------------------------------- network and parser
class ITensor:
    __slots__ = ("_name", "_dtype", "_dims", "_symbols")

    def __init__(self, name, dtype, dims, symbols):
        self._name, self._dtype, self._dims, self._symbols = name, dtype, Dims(dims), tuple(symbols)

    @property
    def name(self):
        return self._name

    @property
    def dtype(self):
        return self._dtype

    @property
    def shape(self):
        return self._dims


class INetworkDefinition:
    __slots__ = ("_strongly_typed", "_inputs", "_outputs", "_model", "_source")

    def __init__(self, strongly_typed):
        self._strongly_typed = strongly_typed
        self._inputs, self._outputs, self._model, self._source = [], [], None, None

    @property
    def num_inputs(self):
        return len(self._inputs)

    @property
    def num_outputs(self):
        return len(self._outputs)

    def get_input(self, index):
        return self._inputs[index]

    def get_output(self, index):
        return self._outputs[index]


class ParserError:
    __slots__ = ("_desc", "_node_name", "_node_operator")

    def __init__(self, desc, node_name="", node_operator=""):
        self._desc, self._node_name, self._node_operator = desc, node_name, node_operator

    def desc(self):
        return self._desc

    def node_name(self):
        return self._node_name

    def node_operator(self):
        return self._node_operator


def _tensor_from_onnx(value_info):
    kind = value_info.type.tensor_type
    if kind.elem_type not in _FROM_ONNX:
        raise ValueError(f"{value_info.name}: unsupported data type {_onnx.TensorProto.DataType.Name(kind.elem_type)}")
    dims, symbols = [], []
    for d in kind.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else -1)
        symbols.append(d.dim_param or None)
    return ITensor(value_info.name, _FROM_ONNX[kind.elem_type], dims, symbols)


class OnnxParser:
    __slots__ = ("_network", "_logger", "_errors")

    def __init__(self, network, logger):
        self._network, self._logger, self._errors = network, logger, []

    @property
    def num_errors(self):
        return len(self._errors)

    def get_error(self, index):
        return self._errors[index]

    def parse_from_file(self, model):
        try:
            proto = _onnx.load(str(model))      # resolves external data next to the file, as TensorRT does
            constants = {t.name for t in proto.graph.initializer}
            inputs = [_tensor_from_onnx(v) for v in proto.graph.input if v.name not in constants]
            outputs = [_tensor_from_onnx(v) for v in proto.graph.output]
        except Exception as e:  # protobuf and onnx raise many types for a bad file
            self._errors.append(ParserError(f"Failed to parse ONNX model {model}: {e}"))
            _error(self._logger, self._errors[-1].desc())
            return False
        # TensorRT 10's support matrix: every operator, data type, initializer axis and zero-point
        refused = _parser_problems(proto)
        if refused:
            for problem in refused:
                self._errors.append(ParserError(problem.text, problem.node, problem.operator))
                _error(self._logger, problem.text)
            return False
        for t in outputs:
            if any(d < 0 and s is None for d, s in zip(t._dims, t._symbols)):
                # TensorRT infers such shapes; the stand-in binds output dims by dim_param name only
                raise NotImplementedError(f"stand-in: output {t.name} has an unnamed dynamic dimension")
        net = self._network
        net._inputs, net._outputs = inputs, outputs
        net._model, net._source = proto.SerializeToString(), str(model)
        return True


# --------------------------------------------------------------------------- builder
class IOptimizationProfile:
    __slots__ = ("_shapes", "_valid")

    def __init__(self):
        self._shapes, self._valid = {}, True

    def set_shape(self, input, min, opt, max):  # noqa: A002 -- the real keyword names
        shapes = tuple(tuple(int(d) for d in s) for s in (min, opt, max))
        ranks_agree = len({len(s) for s in shapes}) == 1
        if not ranks_agree or any(not 0 <= a <= b <= c for a, b, c in zip(*shapes)):
            self._valid = False
            _errors.append(f"set_shape({input}): need 0 <= min <= opt <= max per dimension, got {shapes}")
            return
        self._shapes[input] = shapes


class ITimingCache:
    __slots__ = ("_entries",)

    def __init__(self, entries=()):
        self._entries = set(entries)

    def serialize(self):
        body = _json.dumps({"version": __version__, "entries": sorted(self._entries)}).encode()
        return IHostMemory(_CACHE_MAGIC + body)

    def combine(self, input_cache, ignore_mismatch):
        if not isinstance(input_cache, ITimingCache):
            raise TypeError("combine() expects an ITimingCache")
        self._entries |= input_cache._entries
        return True


def _read_timing_cache(blob):
    if not blob:
        return ITimingCache()
    if not blob.startswith(_CACHE_MAGIC):
        return None
    try:
        body = _json.loads(blob[len(_CACHE_MAGIC):])
    except ValueError:
        return None
    return ITimingCache(body["entries"]) if body.get("version") == __version__ else None


class IBuilderConfig:
    __slots__ = ("_pools", "_profiles", "_verbosity", "_preview", "_timing_cache", "_flags")

    def __init__(self):
        self._pools, self._profiles, self._preview = {}, [], {}
        self._verbosity, self._timing_cache = ProfilingVerbosity.LAYER_NAMES_ONLY, None
        self._flags = {BuilderFlag.TF32}     # TensorRT's default

    def set_flag(self, flag):
        if not isinstance(flag, BuilderFlag):
            raise TypeError("set_flag expects a BuilderFlag")
        self._flags.add(flag)

    def clear_flag(self, flag):
        if not isinstance(flag, BuilderFlag):
            raise TypeError("clear_flag expects a BuilderFlag")
        self._flags.discard(flag)

    def get_flag(self, flag):
        return flag in self._flags

    def set_memory_pool_limit(self, pool, pool_size):
        if not isinstance(pool, MemoryPoolType) or int(pool_size) < 0:
            raise TypeError(f"set_memory_pool_limit: bad arguments {pool!r}, {pool_size!r}")
        self._pools[pool.name] = int(pool_size)

    def add_optimization_profile(self, profile):
        if not profile._valid or not profile._shapes:
            _errors.append("add_optimization_profile: invalid or empty profile")
            return -1
        self._profiles.append(dict(profile._shapes))
        return len(self._profiles) - 1

    @property
    def profiling_verbosity(self):
        return self._verbosity

    @profiling_verbosity.setter
    def profiling_verbosity(self, value):
        if not isinstance(value, ProfilingVerbosity):
            raise TypeError("profiling_verbosity must be a ProfilingVerbosity")
        self._verbosity = value

    def set_preview_feature(self, feature, enable):
        if not isinstance(feature, PreviewFeature):
            raise TypeError("set_preview_feature expects a PreviewFeature")
        self._preview[feature.name] = bool(enable)

    def create_timing_cache(self, serialized_timing_cache):
        return _read_timing_cache(bytes(serialized_timing_cache))

    def set_timing_cache(self, cache, ignore_mismatch):
        if not isinstance(cache, ITimingCache):
            raise TypeError("set_timing_cache expects an ITimingCache")
        self._timing_cache = cache
        return True

    def get_timing_cache(self):
        return self._timing_cache


class Builder:
    __slots__ = ("_logger",)

    def __init__(self, logger):
        self._logger = logger

    def create_network(self, flags=0):
        known = 1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        if flags & ~known:
            _error(self._logger, f"create_network: unknown flags {flags:#x}")
            return None
        # TensorRT 11 accepts the flag but every network is strongly typed
        return INetworkDefinition(strongly_typed=_MAJOR >= 11 or bool(flags & known))

    def create_builder_config(self):
        return IBuilderConfig()

    def create_optimization_profile(self):
        return IOptimizationProfile()

    def build_serialized_network(self, network, config):
        problem = _profile_problem(network, config)
        if problem:
            _error(self._logger, problem)
            return None
        if config._timing_cache is not None:
            config._timing_cache._entries.add(f"{network._source}:{_json.dumps(config._profiles, sort_keys=True)}")
        io = [{"name": t.name, "mode": mode, "dtype": t.dtype.name, "dims": list(t.shape), "symbols": list(t._symbols)}
              for mode, tensors in (("INPUT", network._inputs), ("OUTPUT", network._outputs)) for t in tensors]
        header = {"version": __version__, "io": io, "profiles": config._profiles, "source": network._source,
                  "strongly_typed": network._strongly_typed, "profiling_verbosity": config._verbosity.name,
                  "memory_pools": config._pools, "preview_features": config._preview,
                  "builder_flags": sorted(f.name for f in config._flags),
                  "timing_cache": config._timing_cache is not None}
        _builds.append(network._source)
        blob = _json.dumps(header).encode()
        return IHostMemory(_PLAN_MAGIC + _struct.pack("<QQ", len(blob), len(network._model)) + blob + network._model)


def _profile_problem(network, config):
    """What TensorRT would reject about building `network` with `config`'s profiles, or None."""
    if network is None or network._model is None:
        return "build_serialized_network: the network has no parsed model"
    dynamic = [t for t in network._inputs if -1 in t.shape]
    if dynamic and not config._profiles:
        return "Network has dynamic or shape inputs, but no optimization profile has been defined."
    inputs = {t.name: t for t in network._inputs}
    for index, profile in enumerate(config._profiles):
        for name in profile:
            if name not in inputs:
                return f"optimization profile {index} names {name}, which is not a network input"
        for t in dynamic:
            if t.name not in profile:
                return f"optimization profile {index} has no shapes for dynamic input {t.name}"
            for shape in profile[t.name]:
                if len(shape) != len(t.shape) or any(d >= 0 and d != s for d, s in zip(t.shape, shape)):
                    return f"optimization profile {index}: {t.name} shape {shape} does not fit its dims {tuple(t.shape)}"
    return None


# --------------------------------------------------------------------------- runtime
def _split_plan(data):
    """(header, model bytes), or None if `data` is not a complete stand-in plan."""
    if not data.startswith(_PLAN_MAGIC) or len(data) < len(_PLAN_MAGIC) + 16:
        return None
    start = len(_PLAN_MAGIC) + 16
    header_len, model_len = _struct.unpack("<QQ", data[len(_PLAN_MAGIC):start])
    if len(data) != start + header_len + model_len:
        return None
    try:
        return _json.loads(data[start:start + header_len]), data[start + header_len:]
    except ValueError:
        return None


class Runtime:
    __slots__ = ("_logger",)

    def __init__(self, logger):
        self._logger = logger

    def deserialize_cuda_engine(self, serialized_engine):
        plan = _split_plan(bytes(serialized_engine))
        if plan is None:
            _error(self._logger, "deserialize_cuda_engine: the plan is not a complete engine (corrupt or truncated)")
            return None
        header, model = plan
        if header["version"] != __version__:
            _error(self._logger, "The engine plan file is not compatible with this version of TensorRT, expecting "
                                 f"library version {__version__} got {header['version']}")
            return None
        return ICudaEngine(header, model, self._logger)


class ICudaEngine:
    __slots__ = ("_io", "_profiles", "_model", "_logger", "_session", "_inferred")

    def __init__(self, header, model, logger):
        self._io = {t["name"]: t for t in header["io"]}
        self._profiles, self._model, self._logger, self._session = header["profiles"], model, logger, None
        self._inferred = {}   # input shapes -> output shapes TensorRT would infer

    def _tensor(self, name):
        if name not in self._io:
            _error(self._logger, f"no IO tensor named {name!r}")
            raise ValueError(f"no IO tensor named {name!r}")
        return self._io[name]

    @property
    def num_io_tensors(self):
        return len(self._io)

    @property
    def num_optimization_profiles(self):
        return len(self._profiles)

    @property
    def device_memory_size_v2(self):
        return _DEVICE_MEMORY

    def get_tensor_name(self, index):
        return list(self._io)[index]

    def get_tensor_mode(self, name):
        return TensorIOMode[self._io[name]["mode"]] if name in self._io else TensorIOMode.NONE

    def get_tensor_dtype(self, name):
        return DataType[self._tensor(name)["dtype"]]

    def get_tensor_shape(self, name):
        return Dims(self._tensor(name)["dims"])

    def get_tensor_profile_shape(self, name, profile_index):
        tensor = self._tensor(name)
        if tensor["mode"] != "INPUT" or -1 not in tensor["dims"]:
            raise ValueError(f"{name} is not a dynamic input, so it has no profile shapes")
        return [Dims(s) for s in self._profiles[profile_index][name]]

    def create_execution_context(self, strategy=ExecutionContextAllocationStrategy.STATIC):
        if not isinstance(strategy, ExecutionContextAllocationStrategy):
            raise TypeError("create_execution_context(strategy: ExecutionContextAllocationStrategy)")
        if self._session is None:
            options = _ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.log_severity_level = 3
            # TensorRT runs weight-only QDQ as dequantized weights times float activations. ONNX
            # Runtime would fuse DequantizeLinear -> MatMul into MatMulNBits with int8 activations.
            options.add_session_config_entry("session.disable_quant_qdq", "1")
            self._session = _ort.InferenceSession(self._model, options, providers=["CPUExecutionProvider"])
        return IExecutionContext(self, strategy)


# "Device memory" is torch CPU tensors; tensors that held earlier buffers are remembered so
# the usual check only scans the young GC generations, not every object in the process.
_known_buffers = _weakref.WeakValueDictionary()   # id -> tensor (tensors' == is elementwise)


def _cpu_tensors(objects):
    return [o for o in objects if isinstance(o, _torch.Tensor) and o.device.type == "cpu"]


def _buffer_holding(address, nbytes, candidates):
    for tensor in candidates:
        storage = tensor.untyped_storage()
        start = storage.data_ptr()
        if start <= address and address + nbytes <= start + storage.nbytes():
            return tensor
    return None


def _buffer_problem(requests):
    """None if every (address, nbytes) lies inside a live tensor's storage, else what is wrong."""
    young = _cpu_tensors(_gc.get_objects(0) + _gc.get_objects(1)) + list(_known_buffers.values())
    everything = None
    for name, (address, nbytes) in requests.items():
        tensor = _buffer_holding(address, nbytes, young)
        if tensor is None:
            everything = everything if everything is not None else _cpu_tensors(_gc.get_objects())
            tensor = _buffer_holding(address, nbytes, everything)
        if tensor is None:
            return f"{name}: address {address:#x} is not inside a live device buffer of at least {nbytes} bytes"
        _known_buffers[id(tensor)] = tensor
    return None


def _overlap(inputs, outputs):
    """(input, output) names of the first output whose bytes overlap an input's, or None."""
    for out_name, (out_at, out_size) in outputs:
        for in_name, (in_at, in_size) in inputs:
            if out_size and in_size and out_at < in_at + in_size and in_at < out_at + out_size:
                return in_name, out_name
    return None


class IExecutionContext:
    __slots__ = ("_engine", "_shapes", "_addresses", "_user_memory", "_memory", "_shape_version", "_ran_version",
                 "_profile")

    def __init__(self, engine, strategy=ExecutionContextAllocationStrategy.STATIC):
        _counts["contexts"] += 1
        self._engine, self._shapes, self._addresses = engine, {}, {}
        self._profile = 0      # every context starts on profile 0 and has its own selection
        self._user_memory = strategy == ExecutionContextAllocationStrategy.USER_MANAGED
        self._memory = None
        self._shape_version, self._ran_version = 0, -1    # shapes changed since the last real enqueue?

    def _fail(self, message):
        _error(self._engine._logger, message)
        return False

    @property
    def active_optimization_profile(self):
        return self._profile

    def set_optimization_profile_async(self, profile_index, stream_handle):
        if not isinstance(stream_handle, int):
            raise TypeError("set_optimization_profile_async(profile_index: int, stream_handle: int)")
        if not 0 <= int(profile_index) < max(len(self._engine._profiles), 1):
            return self._fail(f"set_optimization_profile_async: profile {profile_index} does not exist "
                              f"(the engine has {len(self._engine._profiles)})")
        if _capture is not None:
            return self._fail("set_optimization_profile_async: cannot switch profiles during CUDA graph capture")
        if int(profile_index) != self._profile:
            # TensorRT: switching invalidates the input shapes, which must be set again before enqueue
            _counts["profile_switches"] += 1
            self._profile = int(profile_index)
            self._shapes = {}
            self._shape_version += 1
        return True

    def set_input_shape(self, name, shape):
        _counts["set_input_shape"] += 1
        io = self._engine._io.get(name)
        if io is None or io["mode"] != "INPUT":
            return self._fail(f"set_input_shape: {name!r} is not an input tensor")
        shape = tuple(int(d) for d in shape)
        dims = io["dims"]
        if len(shape) != len(dims) or any(d >= 0 and d != s for d, s in zip(dims, shape)):
            return self._fail(f"set_input_shape: {name} shape {shape} does not match its dims {tuple(dims)}")
        if -1 in dims:
            lo, _, hi = self._engine._profiles[self._profile][name]
            if any(not a <= s <= b for a, s, b in zip(lo, shape, hi)):
                return self._fail(f"set_input_shape: {name} shape {shape} is outside the selected profile "
                                  f"{self._profile} [{tuple(lo)}, {tuple(hi)}]")
        if self._shapes.get(name) != shape:
            self._shape_version += 1
        self._shapes[name] = shape
        return True

    def set_device_memory(self, memory, size):
        if int(size) < _DEVICE_MEMORY:
            _error(self._engine._logger, f"set_device_memory: {size} bytes is less than the {_DEVICE_MEMORY} needed")
            return
        self._memory = (int(memory), int(size))

    def set_tensor_address(self, name, memory):
        if name not in self._engine._io:
            return self._fail(f"set_tensor_address: no IO tensor named {name!r}")
        self._addresses[name] = int(memory)
        return True

    def _symbol_values(self):
        """Dynamic dim names bound by the input shapes set so far (None on a conflict)."""
        values = {}
        for name, shape in self._shapes.items():
            for symbol, size in zip(self._engine._io[name]["symbols"], shape):
                if symbol is not None and values.setdefault(symbol, size) != size:
                    _error(self._engine._logger, f"inconsistent sizes for dimension {symbol!r}")
                    return None
        return values

    def get_tensor_shape(self, name):
        io = self._engine._tensor(name)
        if io["mode"] == "INPUT":
            return Dims(self._shapes.get(name, io["dims"]))
        inputs_set = all(n in self._shapes for n, t in self._engine._io.items() if t["mode"] == "INPUT")
        values = self._symbol_values() if inputs_set else None
        if values is None:
            return Dims(io["dims"])
        dims = [d if d >= 0 else values.get(s, -1) for d, s in zip(io["dims"], io["symbols"])]
        if -1 in dims:
            # A dim named for no input (e.g. past + new tokens): TensorRT infers it from the
            # graph; the stand-in does the same by running the graph once on zeros.
            dims = list(self._inferred_shapes()[name])
        return Dims(dims)

    def _inferred_shapes(self):
        key = tuple(sorted(self._shapes.items()))
        cache = self._engine._inferred
        if key not in cache:
            io = self._engine._io
            feed = {n: _np.zeros(self._shapes[n], _NUMPY[DataType[t["dtype"]]]) for n, t in io.items()
                    if t["mode"] == "INPUT"}
            outputs = [n for n, t in io.items() if t["mode"] == "OUTPUT"]
            cache[key] = {n: tuple(v.shape) for n, v in zip(outputs, self._engine._session.run(outputs, feed))}
        return cache[key]

    def execute_async_v3(self, stream_handle):
        if not isinstance(stream_handle, int):
            raise TypeError("execute_async_v3(stream_handle: int)")
        problem = self._problem(self._addresses)
        if problem:
            return self._fail(f"execute_async_v3: {problem}")
        if stream_handle == 0:
            _warn(self._engine._logger, _DEFAULT_STREAM_WARNING)
        if _capture is not None:
            if stream_handle == 0:
                return self._fail("execute_async_v3: a CUDA graph cannot be captured on the legacy default stream")
            if self._ran_version != self._shape_version:
                return self._fail("execute_async_v3: captured the first enqueue after an input shape change; "
                                  "enqueue once outside the capture first")
            if not _capturable:
                return self._fail("execute_async_v3: this engine cannot be captured into a CUDA graph")
            _capture.append((self, self._shape_version, dict(self._addresses)))
            return True
        self._ran_version = self._shape_version
        return self._launch(self._addresses)

    def _problem(self, addresses):
        """What TensorRT would refuse about running with the shapes set and `addresses`, or None."""
        io = self._engine._io
        unset = [n for n, t in io.items() if t["mode"] == "INPUT" and n not in self._shapes]
        if unset:
            return f"input shapes not specified for {unset}"
        no_address = [n for n in io if not addresses.get(n)]
        if no_address:
            return f"neither address nor allocator is set for {no_address}"
        if self._user_memory and self._memory is None:
            return "the context was created USER_MANAGED but set_device_memory was never called"
        shapes = {n: tuple(self.get_tensor_shape(n)) for n in io}
        if any(-1 in s for s in shapes.values()):
            return "output shapes cannot be inferred from the input shapes"
        sizes = {n: int(_np.prod(shapes[n])) * _np.dtype(_NUMPY[DataType[io[n]["dtype"]]]).itemsize for n in io}
        requests = {n: (addresses[n], sizes[n]) for n in io}
        if self._memory is not None:
            requests["device memory"] = self._memory
        problem = _buffer_problem(requests)     # first: overlaps are only meaningful between real buffers
        if problem:
            return problem
        overlap = _overlap([(n, requests[n]) for n, t in io.items() if t["mode"] == "INPUT"],
                           [(n, requests[n]) for n, t in io.items() if t["mode"] == "OUTPUT"])
        if overlap:   # on a GPU an output written over an input still being read corrupts it
            return f"output {overlap[1]} overlaps input {overlap[0]} in memory"
        return None

    def _launch(self, addresses):
        io = self._engine._io
        shapes = {n: tuple(self.get_tensor_shape(n)) for n in io}
        feed = {n: self._read(addresses[n], n, shapes[n]) for n, t in io.items() if t["mode"] == "INPUT"}
        outputs = [n for n, t in io.items() if t["mode"] == "OUTPUT"]
        for name, value in zip(outputs, self._engine._session.run(outputs, feed)):
            if tuple(value.shape) != shapes[name]:
                return self._fail(f"execute_async_v3: {name} came out {value.shape}, not the inferred {shapes[name]}")
            data = _np.ascontiguousarray(value, dtype=_NUMPY[DataType[io[name]["dtype"]]])
            _ctypes.memmove(addresses[name], data.ctypes.data, data.nbytes)
        return True

    def _read(self, address, name, shape):
        dtype = _np.dtype(_NUMPY[DataType[self._engine._io[name]["dtype"]]])
        count = int(_np.prod(shape))
        if count == 0:
            return _np.zeros(shape, dtype)
        raw = (_ctypes.c_char * (count * dtype.itemsize)).from_address(address)
        return _np.frombuffer(raw, dtype=dtype, count=count).reshape(shape).copy()


class _Graph:
    """The enqueues recorded during one capture; replay() runs them with the recorded addresses."""

    def __init__(self, launches):
        self._launches = launches

    def replay(self):
        for context, version, addresses in self._launches:
            if context._shape_version != version:
                _errors.append("replayed a CUDA graph whose execution context changed input shapes since capture")
                raise RuntimeError("stand-in: replayed a CUDA graph whose execution context changed input shapes "
                                   "since capture; TensorRT would run it with that context's new state")
            problem = context._problem(addresses)
            if problem or not context._launch(addresses):
                _errors.append(f"graph replay: {problem}")
                raise RuntimeError(f"stand-in: CUDA graph replay failed: {problem}")
