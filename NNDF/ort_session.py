"""ONNX Runtime session: the CPU provider here, CUDA where onnxruntime-gpu is installed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from NNDF.errors import UsageError
from NNDF.session import Handle, Session

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
    "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(double)": np.float64,
}


def providers_available() -> list[str]:
    wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for p in wanted if p in ort.get_available_providers()]


class OrtSession(Session):
    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None, threads: int | None = None):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        providers = list(providers or providers_available())
        try:
            self._session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # ORT raises its own exception types for corrupt files
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise UsageError(f"ONNX Runtime cannot load {path}: {first}", "re-export it or delete it (--cleanup)") from None
        self._model_path = str(path)
        self.device = "cuda" if self._session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self._inputs = {i.name: i for i in self._session.get_inputs()}
        self.input_names = list(self._inputs)
        self.output_names = [o.name for o in self._session.get_outputs()]

    def input_dtype(self, name: str) -> np.dtype:
        return np.dtype(_ORT_TYPES[self._inputs[name].type])

    def input_shape(self, name: str):
        return [d if isinstance(d, int) else d for d in self._inputs[name].shape]

    def run(self, feed, host_outputs, device_outputs=()):
        binding = self._session.io_binding()
        for name, value in feed.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        wanted = list(host_outputs) + list(device_outputs)
        for name in wanted:
            binding.bind_output(name, "cpu" if name in host_outputs else self.device)
        self._session.run_with_iobinding(binding)
        values = dict(zip(wanted, binding.get_outputs()))
        host = {n: values[n].numpy() for n in host_outputs}
        device = {n: values[n] for n in device_outputs}
        return host, device

    def zeros(self, name: str, shape) -> Handle:
        return ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, self.input_dtype(name)), self.device, 0)

    def take(self, handle: Handle, indices: np.ndarray, axis: int = 0) -> Handle:
        return ort.OrtValue.ortvalue_from_numpy(np.take(handle.numpy(), indices, axis=axis), self.device, 0)



def ort_optimized(source: Path, model_type: str, config, workdir) -> Path:
    """ONNX Runtime's transformer fusions (SkipLayerNormalization, FastGelu, ...) applied to an
    exported graph, cached beside it. Only ONNX Runtime runs the result: the fused ops are its
    own contrib ops, so TensorRT keeps the plain export."""
    from NNDF.onnx_export import MODEL_FILE
    from NNDF.progress import status
    from NNDF.workdir import MANIFEST, file_digest

    source = Path(source)
    key = {"source": file_digest(source.parent / MANIFEST) if (source.parent / MANIFEST).is_file() else file_digest(source),
           "model_type": model_type, "onnxruntime": ort.__version__}
    target = source.parent.with_name(source.parent.name + "-ort")

    def produce(tmp: Path) -> dict:
        from onnxruntime.transformers.optimizer import optimize_model

        with status(f"applying ONNX Runtime's {model_type} fusions"):
            heads = config.num_attention_heads
            optimized = optimize_model(str(source), model_type=model_type, num_heads=heads,
                                       hidden_size=config.hidden_size, opt_level=0)
            optimized.save_model_to_file(str(tmp / MODEL_FILE), use_external_data_format=True,
                                         all_tensors_to_one_file=True)
        described = json.loads((source.parent / MANIFEST).read_text()) if (source.parent / MANIFEST).is_file() else {}
        return {"graph": f"{described.get('graph', source.stem)} (onnxrt-fused)",
                "inputs": described.get("inputs", []), "outputs": described.get("outputs", []),
                "fusions": {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}}

    return workdir.build(target, key, (MODEL_FILE,), produce).file(MODEL_FILE)
