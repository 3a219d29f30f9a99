"""`run.py export-triton`: the repository's files, and the repository loaded in PyTriton's
bundled Triton server as far as its backends allow (it has only the Python backend, so the
graph model stays unloaded while the generation models serve from the same graph files)."""

from __future__ import annotations

import os
import re

import pytest
import tritonclient.http as http   # the [serve] extra; the [test] extra installs it too

import run as run_py
from conftest import make_cfg
from NNDF.base.config import ServeSettings
from NNDF.cli import parse_args
from NNDF.registry import get_family
from NNDF.serving.exported import open_exported
from NNDF.serving.requests import answer_all, parse_request, stream_answer
from NNDF.serving.triton_client import HOST, free_ports, generate_http, stream_grpc
from NNDF.serving.triton_repo import MANIFEST

PROMPTS = ["The lighthouse keeper", "Ben", "A storm rolled in over the harbour"]


@pytest.fixture(scope="module")
def repository(workdir, tmp_path_factory):
    out = tmp_path_factory.mktemp("triton-repo")
    assert run_py.main(["export-triton", "GPT2", "--use-cache", "--working-dir", str(workdir.root),
                        "--output", str(out), "--max-batch-size", "8", "--instances", "2"]) == 0
    return out


@pytest.fixture(scope="module")
def alone(workdir, gpt2_tiny):
    """What the onnxrt backend answers each prompt alone, in this process."""
    cfg = make_cfg(workdir, "--use-cache", backends=("onnxrt",))
    backend = __import__("GPT2.onnxrt", fromlist=["make_backend"]).make_backend(gpt2_tiny, cfg, workdir)
    import numpy as np

    def answer(prompt, n):
        req = parse_request({"text": np.array([[prompt.encode()]], dtype=np.object_),
                             "max_new_tokens": np.array([[n]], np.int32)}, gpt2_tiny, cfg.generation)
        return answer_all([req], gpt2_tiny, backend, 1)[0]
    return {(p, n): answer(p, n) for p in PROMPTS for n in (4, 12)}


def test_repository_layout_and_configs(repository):
    decoder = (repository / "decoder" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in decoder and 'default_model_filename: "model.onnx"' in decoder
    assert (repository / "decoder" / "1" / "model.onnx").is_file() and (repository / "decoder" / "1" / "model.onnx.data").is_file()
    generate = (repository / "generate" / "config.pbtxt").read_text()
    assert 'backend: "python"' in generate and "max_batch_size: 8" in generate
    assert "dynamic_batching { max_queue_delay_microseconds: 5000 }" in generate
    assert "instance_group [ { kind: KIND_CPU count: 2 } ]" in generate
    stream = (repository / "generate_stream" / "config.pbtxt").read_text()
    assert "model_transaction_policy { decoupled: true }" in stream and "dynamic_batching" not in stream
    for model in ("generate", "generate_stream"):
        version = repository / model / "1"
        assert (version / "model.py").is_file() and (version / MANIFEST).is_file() and (version / "tokenizer").is_dir()


def test_repository_runs_without_the_torch_model(repository, alone):
    loaded, backend, defaults = open_exported(repository / "generate" / "1")
    import numpy as np

    reqs = [parse_request({"text": np.array([[p.encode()]], dtype=np.object_),
                           "max_new_tokens": np.array([[12]], np.int32)}, loaded, defaults) for p in PROMPTS]
    assert answer_all(reqs, loaded, backend, 8) == [alone[(p, 12)] for p in PROMPTS]


def test_bundled_server_loads_the_generation_models(repository, alone, tmp_path):
    from NNDF.serving.triton_server import start_triton

    http_port, grpc_port, metrics_port = free_ports(3)
    settings = ServeSettings(host=HOST, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port)
    saved_env = dict(os.environ)
    log = tmp_path / "triton.log"
    triton = start_triton(repository, settings, log, every_model_required=False)
    try:
        url = f"{HOST}:{http_port}"
        client = http.InferenceServerClient(url)
        try:
            assert client.is_model_ready("generate") and client.is_model_ready("generate_stream")
            assert not client.is_model_ready("decoder")   # no onnxruntime backend in PyTriton's server
            index = {m["name"]: m for m in client.get_model_repository_index()}
            assert index["decoder"]["state"] == "UNAVAILABLE"
            assert re.search("onnxruntime", index["decoder"]["reason"]), index["decoder"]
        finally:
            client.close()
        for prompt in PROMPTS:
            assert generate_http(url, prompt, 12) == alone[(prompt, 12)]
        assert prompt + "".join(stream_grpc(f"{HOST}:{grpc_port}", prompt, 4)) == alone[(prompt, 4)]
    finally:
        triton.stop()
        os.environ.clear()
        os.environ.update(saved_env)


def test_bad_exports_are_one_line_errors(capsys, workdir, tmp_path):
    wd = str(workdir.root)
    code = run_py.main(["export-triton", "BLIP", "--working-dir", wd, "--output", str(tmp_path / "blip")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: serve answers text prompts"), err
    code = run_py.main(["export-triton", "GPT2", "--backend", "trt", "--working-dir", wd, "--output", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "--dynamic-batch --max-dynamic-batch 16" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    code = run_py.main(["export-triton", "GPT2", "--working-dir", wd, "--output", str(tmp_path / "mine")])
    err = capsys.readouterr().err
    assert code == 2 and "is not a repository written by export-triton" in err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_trt_repository_on_the_standin(standin, workdir, tmp_path, alone, monkeypatch):
    """Plans keyed per GPU kind, loaded by the generation model with TensorRT's runtime (the CPU stand-in here)."""
    from NNDF.runtime import trt_env

    out = tmp_path / "repo"
    argv = ["export-triton", "GPT2", "--backend", "trt", "--use-cache", "--dynamic-batch", "--max-dynamic-batch", "16",
            "--working-dir", str(workdir.root), "--output", str(out)]
    assert run_py.main(argv) == 0
    first_gpu = trt_env.device_identity()
    monkeypatch.setattr(trt_env, "device_identity", lambda: {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"})
    assert run_py.main(argv) == 0   # a second GPU kind adds its plan to the same repository
    config = (out / "decoder" / "config.pbtxt").read_text()
    plans = dict(re.findall(r'cc_model_filenames \{ key: "([\d.]+)" value: "([^"]+)" \}', config))
    assert set(plans) == {first_gpu["compute_capability"], "9.0"}
    for cc, name in plans.items():
        assert (out / "decoder" / "1" / name).is_file() and f"-sm{cc.replace('.', '')}-trt" in name
    assert plans["9.0"].startswith("nvidia-h100-80gb-hbm3-sm90-trt")
    assert "instance_group [ { kind: KIND_GPU count: 1 } ]" in (out / "generate" / "config.pbtxt").read_text()
    loaded, backend, defaults = open_exported(out / "generate" / "1")
    import numpy as np

    reqs = [parse_request({"text": np.array([[p.encode()]], dtype=np.object_),
                           "max_new_tokens": np.array([[12]], np.int32)}, loaded, defaults) for p in PROMPTS]
    assert answer_all(reqs, loaded, backend, 8) == [alone[(p, 12)] for p in PROMPTS]


@pytest.mark.parametrize("backend", ["onnxrt", "trt"])
def test_encoder_decoder_repository(backend, workdir, tmp_path, monkeypatch):
    """T5: encoder, cache generator and decoder each a graph model, the generation model running
    all three from the repository's files with the answers the backend gives in this process
    (trt: plans built and run on the TensorRT stand-in)."""
    import numpy as np

    if backend == "trt":
        import trt_standin

        trt_standin.install(monkeypatch)
    flags = ["--use-cache", "--working-dir", str(workdir.root)]
    trt_flags = ["--dynamic-batch", "--max-dynamic-batch", "16"] if backend == "trt" else []
    out = tmp_path / "t5"
    assert run_py.main(["export-triton", "T5", "--backend", backend, *flags, *trt_flags, "--output", str(out)]) == 0
    for graph in ("encoder", "cache_generator", "decoder"):
        config = (out / graph / "config.pbtxt").read_text()
        assert f'name: "{graph}"' in config
        assert ('platform: "tensorrt_plan"' if backend == "trt" else 'platform: "onnxruntime_onnx"') in config
    cfg = parse_args(["run", "T5", backend, *flags, *trt_flags])
    loaded = get_family("T5").load(cfg)
    here = __import__("T5." + backend, fromlist=["make_backend"]).make_backend(loaded, cfg, workdir)
    exported_model, exported_backend, defaults = open_exported(out / "generate" / "1")
    prompts = ["translate English to German: The house is small.", "summarize: A storm rolled in", "Ben"]

    def requests(model):
        return [parse_request({"text": np.array([[p.encode()]], dtype=np.object_),
                               "max_new_tokens": np.array([[10]], np.int32)}, model, defaults) for p in prompts]
    want = [answer_all([r], loaded, here, 8)[0] for r in requests(loaded)]
    assert answer_all(requests(exported_model), exported_model, exported_backend, 8) == want
    assert any(want)
    pieces = []
    stream_answer(requests(exported_model)[0], exported_model, exported_backend, pieces.append)
    assert "".join(pieces) == want[0]
