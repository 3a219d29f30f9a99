"""Where each backend runs, and that every result says so (issue: the GPU half, points 7 and 8).

CUDA is mocked here: the selection logic is what is tested, not a GPU.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

import run as run_py
from conftest import make_cfg
from NNDF.base.errors import UsageError
from NNDF.kinds.makers import make_backends
from NNDF.registry import get_family
from NNDF.runtime import placement as torch_placement
from NNDF.runtime.ort_session import OrtSession, providers_for
from NNDF.runtime.placement import Placement, framework_placement
from GPT2.frameworks import make_backend as frameworks_backend


@pytest.fixture
def fake_cuda(monkeypatch):
    monkeypatch.setattr(torch_placement, "cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    moved = []
    monkeypatch.setattr(Placement, "place", lambda self, model: moved.append((self, model)) or model)
    return moved


def test_frameworks_follows_the_gpu_and_halves_with_fp16(fake_cuda):
    assert framework_placement(force_cpu=False, fp16=True) == Placement(torch.device("cuda", 0), torch.float16)
    assert framework_placement(force_cpu=False, fp16=False) == Placement(torch.device("cuda", 0), torch.float32)


def test_cpu_flag_forces_the_host_even_with_a_gpu(fake_cuda):
    placement = framework_placement(force_cpu=True, fp16=True)
    assert placement.device == torch.device("cpu") and placement.dtype == torch.float32


def test_fp16_on_the_cpu_stays_fp32_and_says_so_once(monkeypatch, capsys):
    monkeypatch.setattr(torch_placement, "cuda_available", lambda: False)
    monkeypatch.setattr(torch_placement, "_warned_fp16_cpu", False)
    first = framework_placement(force_cpu=False, fp16=True)
    framework_placement(force_cpu=False, fp16=True)
    assert first.precision == "fp32" and first.device_name == "cpu"
    assert capsys.readouterr().err.count("stays fp32") == 1


def test_frameworks_backend_is_placed_and_named_by_its_placement(fake_cuda, gpt2_tiny, workdir):
    cfg = make_cfg(workdir, "--fp16", action="benchmark")
    backend = frameworks_backend(gpt2_tiny, cfg)
    assert (backend.device, backend.precision) == ("cuda:0", "fp16")
    assert fake_cuda and fake_cuda[0][1] is gpt2_tiny.model


def test_compiled_backends_are_made_before_frameworks(monkeypatch, gpt2_tiny, workdir):
    """frameworks may move the shared model to the GPU; exports must trace it on the host first."""
    made = []
    family = get_family("GPT2")
    from NNDF.kinds.decoder_only import backends

    for name in ("frameworks", "onnxrt"):
        monkeypatch.setattr(backends, name, lambda fam, loaded, cfg, wd, m=f"GPT2.{name}": made.append(m) or m)
    cfg = make_cfg(workdir, backends=("frameworks", "onnxrt"))
    assert make_backends(family, gpt2_tiny, cfg, workdir) == ["GPT2.frameworks", "GPT2.onnxrt"]   # order kept
    assert made == ["GPT2.onnxrt", "GPT2.frameworks"]                                             # made in this order


def test_export_refuses_a_model_that_left_the_host(workdir):
    family = get_family("GPT2")
    cfg = make_cfg(workdir, backends=("onnxrt",))
    loaded = family.load(cfg)
    loaded.model.half()   # what running frameworks with --fp16 on a GPU does to the shared model
    with pytest.raises(UsageError, match="host fp32 model"):
        make_backends(family, loaded, cfg, workdir)


def test_every_result_names_device_and_precision(tmp_path):
    out = tmp_path / "bench.json"
    code = run_py.main(["benchmark", "GPT2", "frameworks", "onnxrt", "--use-cache", "--input-seq-len", "8",
                        "--output-seq-len", "4", "--iterations", "1", "--warmup", "0", "--fp16",
                        "--working-dir", str(tmp_path / "work"), "--save-output-fpath", str(out), "--cpu"])
    assert code == 0
    results = json.loads(out.read_text())["results"]
    assert results["frameworks"]["device"] == "cpu" and results["frameworks"]["precision"] == "fp32"
    assert results["onnxrt"]["device"] == "cpu" and results["onnxrt"]["precision"] == "fp16"


def test_cpu_flag_keeps_onnx_runtime_off_cuda(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert providers_for(allow_cuda=True)[0] == "CUDAExecutionProvider"
    assert providers_for(allow_cuda=False) == ["CPUExecutionProvider"]


class _FallbackSession:
    """ONNX Runtime's InferenceSession as it behaves when the CUDA provider cannot start (cuDNN or
    cuBLAS missing): asked for CUDA first, it comes up on the CPU provider alone, logging (at a level
    the toolkit hides) instead of failing. Records every providers list it was asked for."""

    asked: list = []
    real = ort.InferenceSession

    def __init__(self, path, options, providers):
        type(self).asked.append(list(providers))
        self._real = self.real(path, options, providers=["CPUExecutionProvider"])

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.fixture
def cuda_that_cannot_start(monkeypatch, tmp_path):
    """onnxruntime-gpu installed (the CUDA provider is listed) but unusable; preload_dlls recorded."""
    import NNDF.runtime.ort_session as ort_session

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", _FallbackSession)
    monkeypatch.setattr(_FallbackSession, "asked", [])
    preloads = []
    monkeypatch.setattr(ort, "preload_dlls", lambda *a, **k: preloads.append(1), raising=False)
    monkeypatch.setattr(ort_session, "preload_cuda_libraries",
                        functools.cache(ort_session.preload_cuda_libraries.__wrapped__))
    monkeypatch.setattr(ort_session, "_said_fallback", set())
    from onnx import TensorProto, helper, save

    path = tmp_path / "g" / "model.onnx"
    path.parent.mkdir()
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path, preloads


def test_a_cuda_provider_that_cannot_start_is_labelled_cpu_and_said_once(cuda_that_cannot_start, capsys):
    """Issue 24: providers_for trusted get_available_providers(), so a missing cuDNN made ONNX Runtime
    run on the CPU unseen. The session is labelled by its own get_providers(), the run says so once per
    graph, and preload_dlls() ran before the first CUDA session (ONNX Runtime 1.21+)."""
    path, preloads = cuda_that_cannot_start
    first, second = OrtSession(path), OrtSession(path)
    assert _FallbackSession.asked[0][0] == "CUDAExecutionProvider"     # CUDA was asked for
    assert first.device_name == second.device_name == "cpu"            # and the label is what it got
    err = capsys.readouterr().err
    assert err.count("CUDA execution provider did not start") == 1 and "its results say cpu" in err
    assert preloads == [1]                                             # once per process


def test_require_cuda_refuses_in_one_line_when_the_provider_cannot_start(cuda_that_cannot_start):
    path, _ = cuda_that_cannot_start
    with pytest.raises(UsageError, match="--require-cuda: ONNX Runtime's CUDA execution provider did not start"):
        OrtSession(path, require_cuda=True)


def test_require_cuda_refuses_without_a_cuda_provider_or_device(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(torch_placement, "cuda_available", lambda: False)
    wd = str(tmp_path)
    for backend, match in (("onnxrt", "ONNX Runtime here has no CUDA execution provider"),
                           ("frameworks", "PyTorch sees no CUDA device")):
        code = run_py.main(["run", "GPT2", backend, "--require-cuda", "--working-dir", wd, "--iterations", "1"])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and match in errors[0] and "Traceback" not in err, err
    code = run_py.main(["run", "GPT2", "onnxrt", "--require-cuda", "--cpu", "--working-dir", wd])
    assert code == 2 and "contradict" in capsys.readouterr().err


def test_a_working_cuda_provider_is_labelled_cuda(monkeypatch, tmp_path):
    """The other side: a session that did start on CUDA (mocked: its get_providers says so) is cuda:0."""
    class OnCuda(_FallbackSession):
        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

        def get_provider_options(self):
            return {"CUDAExecutionProvider": {"device_id": "0"}, "CPUExecutionProvider": {}}

    import NNDF.runtime.ort_session as ort_session

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", OnCuda)
    monkeypatch.setattr(ort, "preload_dlls", lambda *a, **k: None, raising=False)
    monkeypatch.setattr(ort_session, "preload_cuda_libraries", functools.cache(ort_session.preload_cuda_libraries.__wrapped__))
    from onnx import TensorProto, helper, save

    path = tmp_path / "model.onnx"
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    assert OrtSession(path, require_cuda=True).device_name == "cuda:0"


def _identity_graph(path, elem):
    from onnx import TensorProto, helper, save

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", elem, ["b", 3])],
                              [helper.make_tensor_value_info("y", elem, ["b", 3])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return OrtSession(path, allow_cuda=False)


def test_beam_reorder_stays_an_ort_value_on_the_session_device(tmp_path):
    from onnx import TensorProto

    session = _identity_graph(tmp_path / "id.onnx", TensorProto.FLOAT16)
    data = np.arange(4 * 2 * 5 * 3, dtype=np.float16).reshape(4, 2, 5, 3)
    handle = ort.OrtValue.ortvalue_from_numpy(data)
    for axis, idx in ((0, [3, 3, 0, 1]), (2, [4, 0])):
        moved = session.take(handle, np.array(idx), axis=axis)
        assert isinstance(moved, ort.OrtValue) and moved.device_name().lower() == "cpu"
        np.testing.assert_array_equal(moved.numpy(), np.take(data, idx, axis=axis))


def test_host_inputs_are_fed_in_the_graphs_own_type(tmp_path):
    from onnx import TensorProto

    session = _identity_graph(tmp_path / "id16.onnx", TensorProto.FLOAT16)
    host, _ = session.run({"x": np.ones((2, 3), np.float32)}, ["y"])
    assert host["y"].dtype == np.float16


# --------------------------------------------------------------------------- run.py env
from NNDF.actions.environment import backend_status  # noqa: E402

GPU = {"torch": "2.13.0", "torch_cuda": "12.6", "gpu": "NVIDIA H100 (sm90, cuda:0)"}
NO_TRT = {"distributions": {}, "version": None, "error": "No module named 'tensorrt'"}


def test_env_flags_onnxruntime_and_onnxruntime_gpu_installed_together():
    both = {"distributions": {"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.31.1"}, "error": None,
            "providers": ["CPUExecutionProvider"]}
    assert backend_status(GPU, both, NO_TRT)["onnxrt"].startswith("broken set")


def test_env_says_where_each_backend_runs_and_what_is_missing():
    gpu_ort = {"distributions": {"onnxruntime-gpu": "1.31.1"}, "error": None,
               "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
    status = backend_status(GPU, gpu_ort, {"distributions": {}, "version": "10.16.1", "error": None})
    assert status == {"frameworks": "ready on NVIDIA H100 (sm90, cuda:0)",
                      "onnxrt": "ready on CUDA (CUDAExecutionProvider)", "trt": "ready (TensorRT 10.16.1)"}
    cpu = {"torch": "2.13.0", "torch_cuda": None, "gpu": None}
    status = backend_status(cpu, {**gpu_ort, "providers": ["CPUExecutionProvider"]}, NO_TRT)
    assert "CUDA build of torch" in status["frameworks"] and "CPU only" in status["onnxrt"]
    assert "tensorrt cannot be imported" in status["trt"] and "no CUDA GPU" in status["trt"]


def test_env_action_runs_without_a_family(capsys):
    assert run_py.main(["env"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime" in out and "backends:" in out and "trt" in out


def test_gpu_benchmark_refuses_clearly_without_a_gpu():
    import subprocess
    import sys

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the benchmark would run")
    done = subprocess.run([sys.executable, str(run_py.__file__).replace("run.py", "benchmarks/gpu_speed.py")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error:") and "needs a CUDA GPU" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
