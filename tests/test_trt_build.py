"""Engine profiles, cache keys and the engine cache, against the CPU stand-in for TensorRT."""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import trt_standin
from conftest import make_cfg
from NNDF.base.config import TrtSettings
from NNDF.base.errors import UsageError
from NNDF.base.hashing import stable_hash
from NNDF.cli import build_parser, parse_args
from NNDF.export.trt_engines import ENGINE_FILE, TIMING_CACHE_FILE, device_dirname, engine_for, engine_key
from NNDF.export.workdir import MANIFEST, WorkingDir
from NNDF.graphs.axes import RunSizes
from NNDF.graphs.spec import GraphSpec
from NNDF.kinds.decoder_only.graphs import decoder_spec
from NNDF.runtime import trt_env
from NNDF.runtime.trt_profiles import profile_ranges
from NNDF.runtime.trt_session import TrtSession
from GPT2 import trt as gpt2_trt
from GPT2.GPT2ModelConfig import GPT2_LAYOUT

TOY = GraphSpec(name="toy", inputs={"x": {0: "batch", 1: "seq"}}, outputs={"y": {0: "batch", 1: "seq"}},
                make_module=None, make_inputs=None, trace_sizes={})
TOY_RANGES = {"batch": (1, 2, 4), "seq": (1, 8, 16)}
GPU = {"name": "NVIDIA GeForce RTX 3090", "compute_capability": "8.6"}


def toy_onnx(path: Path, bias: float = 1.0, dtype: int = TensorProto.FLOAT, external: bool = False) -> Path:
    """y = x + bias over (batch, seq): a graph TensorRT (and the stand-in) builds in no time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np_type = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64}[dtype]
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "b"], ["y"])], "toy",
        [helper.make_tensor_value_info("x", dtype, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", dtype, ["batch", "seq"])],
        [numpy_helper.from_array(np.full((1,), bias, np_type), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path), save_as_external_data=external, location="model.onnx.data", size_threshold=0)
    return path


@pytest.fixture
def standin(monkeypatch):
    return trt_standin.install(monkeypatch)


@pytest.fixture
def toy(tmp_path) -> Path:
    return toy_onnx(tmp_path / "onnx" / "model.onnx")


def build_toy(tmp_path, onnx_path, settings=TrtSettings(), fp16=False, ranges=TOY_RANGES, spec=TOY) -> Path:
    return engine_for(onnx_path, spec, ranges, settings, fp16, WorkingDir(tmp_path / "work"), ("Toy", "toy"))


# --------------------------------------------------------------------------- profile ranges
def test_profile_ranges_fixed_batch_counts_beams(workdir, gpt2_tiny):
    cfg = make_cfg(workdir, "--use-cache", "--batch-size", "3", "--num-beams", "2", "--output-seq-len", "20",
                   "--input-seq-len", "10")
    ranges = profile_ranges(decoder_spec(gpt2_tiny.model, GPT2_LAYOUT, True), cfg.trt, RunSizes.of(cfg), 128)
    assert ranges == {"batch": (6, 6, 6), "seq": (1, 1, 128), "kept": (1, 1, 128), "past_len": (0, 19, 127),
                      "total_len": (1, 20, 128)}
    nocache = profile_ranges(decoder_spec(gpt2_tiny.model, GPT2_LAYOUT, False), cfg.trt, RunSizes.of(cfg), 128)
    assert nocache == {"batch": (6, 6, 6), "seq": (1, 20, 128), "kept": (1, 1, 128), "total_len": (1, 20, 128)}


def test_profile_ranges_dynamic_batch(workdir, gpt2_tiny):
    cfg = make_cfg(workdir, "--use-cache", "--dynamic-batch", "--min-dynamic-batch", "1", "--max-dynamic-batch", "4",
                   "--batch-size", "2", "--num-beams", "3")
    ranges = profile_ranges(decoder_spec(gpt2_tiny.model, GPT2_LAYOUT, True), cfg.trt, RunSizes.of(cfg), 128)
    assert ranges["batch"] == (3, 6, 12)


def test_profile_bounds_follow_the_length_flags(workdir, gpt2_tiny):
    spec = decoder_spec(gpt2_tiny.model, GPT2_LAYOUT, True)
    cfg = make_cfg(workdir, "--use-cache", "--input-profile-max-len", "16", "--output-profile-max-len", "8")
    ranges = profile_ranges(spec, cfg.trt, RunSizes.of(cfg), 128)
    assert (ranges["seq"][2], ranges["kept"][2], ranges["past_len"][2], ranges["total_len"][2]) == (16, 16, 23, 24)
    assert all(lo <= opt <= hi for lo, opt, hi in ranges.values())
    wide = make_cfg(workdir, "--use-cache", "--input-profile-max-len", "500", "--output-profile-max-len", "500")
    clipped = profile_ranges(spec, wide.trt, RunSizes.of(wide), 128)
    assert (clipped["seq"][2], clipped["total_len"][2]) == (128, 128)


def test_unknown_axis_is_refused(workdir):
    spec = dataclasses.replace(TOY, inputs={"x": {0: "batch", 1: "frames"}})
    with pytest.raises(ValueError, match="frames"):
        profile_ranges(spec, make_cfg(workdir).trt, RunSizes.of(make_cfg(workdir)), 128)


# --------------------------------------------------------------------------- cache keys
def test_engine_key_changes_with_everything_an_engine_depends_on(tmp_path):
    onnx_path = toy_onnx(tmp_path / "a" / "model.onnx")
    base = dict(onnx_path=onnx_path, ranges=TOY_RANGES, settings=TrtSettings(), fp16=False, device=GPU,
                trt_version="11.4.0.106")
    key = stable_hash(engine_key(**base))
    same_content = toy_onnx(tmp_path / "b" / "model.onnx")
    assert stable_hash(engine_key(**base)) == key
    assert stable_hash(engine_key(**{**base, "onnx_path": same_content})) == key   # where the file lives: irrelevant
    variants = {
        "gpu": {"device": {**GPU, "name": "NVIDIA A100-SXM4-40GB"}},
        "capability": {"device": {**GPU, "compute_capability": "8.9"}},
        "trt": {"trt_version": "10.16.1.11"},
        "onnx": {"onnx_path": toy_onnx(tmp_path / "c" / "model.onnx", bias=2.0)},
        "precision": {"fp16": True},
        "profile": {"ranges": {**TOY_RANGES, "seq": (1, 8, 32)}},
        "postfix": {"settings": TrtSettings(engine_postfix="v2")},
        "workspace": {"settings": TrtSettings(workspace_mib=512)},
        "timing cache": {"settings": TrtSettings(use_timing_cache=True)},
        "tf32": {"settings": TrtSettings(tf32=True)},
    }
    hashes = {name: stable_hash(engine_key(**{**base, **change})) for name, change in variants.items()}
    assert key not in hashes.values()
    assert len(set(hashes.values())) == len(hashes)
    # a flag that changes nothing in the engine must not cause a rebuild
    assert stable_hash(engine_key(**{**base, "settings": TrtSettings(disable_preview_dynamic_shapes=True)})) == key


def test_engine_key_covers_external_weights(tmp_path):
    path = toy_onnx(tmp_path / "x" / "model.onnx", external=True)
    data = path.with_name("model.onnx.data")
    assert data.is_file()
    args = dict(ranges=TOY_RANGES, settings=TrtSettings(), fp16=False, device=GPU, trt_version="11.4.0.106")
    before = engine_key(path, **args)
    assert set(before["onnx"]) == {"model.onnx", "model.onnx.data"}
    data.write_bytes(np.float32(5.0).tobytes())
    assert engine_key(path, **args) != before


def test_engine_directory_names_gpu_and_tensorrt(standin, tmp_path, toy):
    engine = build_toy(tmp_path, toy)
    assert device_dirname(GPU, "11.4.0.106") == "nvidia-geforce-rtx-3090-sm86-trt11.4"
    rel = engine.relative_to(tmp_path / "work")
    assert rel.parts[:4] == ("Toy", "toy", "engines", "nvidia-stand-in-gpu-sm86-trt11.4")
    assert rel.parts[4].startswith("toy-fp32-") and rel.name == ENGINE_FILE
    manifest = json.loads((engine.parent / MANIFEST).read_text())
    assert manifest["key"]["tensorrt"] == trt_standin.VERSION_11
    assert manifest["files"][ENGINE_FILE]["size"] == engine.stat().st_size
    assert build_toy(tmp_path, toy) == engine and len(standin._builds) == 1   # reused, not rebuilt


# --------------------------------------------------------------------------- stale engines and concurrency
@pytest.mark.parametrize("damage", ["truncate", "manifest"])
def test_mismatched_or_truncated_engine_is_rebuilt_not_loaded(standin, tmp_path, toy, damage):
    engine = build_toy(tmp_path, toy)
    good = engine.read_bytes()
    if damage == "truncate":
        engine.write_bytes(good[: len(good) // 2])
    else:
        manifest = json.loads((engine.parent / MANIFEST).read_text())
        manifest["key"]["precision"] = "fp16"
        (engine.parent / MANIFEST).write_text(json.dumps(manifest))
    assert build_toy(tmp_path, toy) == engine
    assert len(standin._builds) == 2 and engine.read_bytes() == good
    TrtSession(engine, TOY, TOY_RANGES, TrtSettings())   # loads cleanly


def test_corrupt_prebuilt_engine_is_refused(standin, tmp_path, toy):
    engine = build_toy(tmp_path, toy)
    cut = tmp_path / "cut.plan"
    cut.write_bytes(engine.read_bytes()[:-10])
    with pytest.raises(UsageError, match="another TensorRT version or is corrupt"):
        TrtSession(cut, TOY, TOY_RANGES, TrtSettings())


def test_engine_from_another_tensorrt_version_is_refused(monkeypatch, tmp_path, toy):
    trt_standin.install(monkeypatch, trt_standin.VERSION_10)
    engine = build_toy(tmp_path, toy)
    trt_standin.install(monkeypatch, trt_standin.VERSION_11)
    with pytest.raises(UsageError, match="another TensorRT version"):
        TrtSession(engine, TOY, TOY_RANGES, TrtSettings())
    assert build_toy(tmp_path, toy) != engine    # 11 gets its own engine directory


def _build_in_child(tmp_path: Path, onnx_path: Path, out: Path) -> None:
    out.write_text(str(build_toy(tmp_path, onnx_path)))


def test_concurrent_builds_leave_one_valid_engine(standin, tmp_path, toy, monkeypatch):
    """Two processes ask for the same engine at once: one builds, the other waits and reuses it."""
    log_file = tmp_path / "builds.log"
    real_build = standin.Builder.build_serialized_network

    def slow_build(self, network, config):
        with open(log_file, "a") as f:
            f.write("build\n")
        time.sleep(0.5)           # long enough for the other process to arrive while this one builds
        return real_build(self, network, config)

    monkeypatch.setattr(standin.Builder, "build_serialized_network", slow_build)
    fork = multiprocessing.get_context("fork")   # children inherit the stand-in and the patches
    children = [fork.Process(target=_build_in_child, args=(tmp_path, toy, tmp_path / f"out{i}")) for i in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert [c.exitcode for c in children] == [0, 0]
    paths = {(tmp_path / f"out{i}").read_text() for i in range(2)}
    assert len(paths) == 1
    assert log_file.read_text() == "build\n"
    engine = Path(paths.pop())
    leftovers = [p.name for p in engine.parent.parent.iterdir() if not p.name.endswith((".lock", ".use"))]
    assert leftovers == [engine.parent.name]       # no temporary or half-built directories
    TrtSession(engine, TOY, TOY_RANGES, TrtSettings())


# --------------------------------------------------------------------------- wrong engines, wrong environment
def test_prebuilt_engine_with_other_io_names_is_refused(standin, tmp_path, toy):
    engine = build_toy(tmp_path, toy)
    other = dataclasses.replace(TOY, name="decoder", inputs={"input_ids": {0: "batch", 1: "seq"}},
                                outputs={"logits": {0: "batch", 1: "seq"}})
    with pytest.raises(UsageError, match=r"does not fit the decoder graph: missing \['input_ids', 'logits'\]"):
        TrtSession(engine, other, TOY_RANGES, TrtSettings())


def test_prebuilt_engine_with_a_smaller_profile_is_refused(standin, tmp_path, toy):
    engine = build_toy(tmp_path, toy)
    with pytest.raises(UsageError, match="accepts seq 1..16 but this run needs 1..64.*--input-profile-max-len"):
        TrtSession(engine, TOY, {**TOY_RANGES, "seq": (1, 8, 64)}, TrtSettings())


def test_steps_outside_the_profile_name_the_flag(standin, tmp_path, toy):
    session = TrtSession(build_toy(tmp_path, toy), TOY, TOY_RANGES, TrtSettings())
    x = np.zeros((2, 5), np.float32)
    np.testing.assert_array_equal(session.infer({"x": x})["y"], x + 1)
    with pytest.raises(UsageError, match="batch=5 but the TensorRT profile covers 1..4; change --batch-size"):
        session.infer({"x": np.zeros((5, 3), np.float32)})


def _one_line_usage_error(excinfo, *needles):
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_trt_without_tensorrt_is_one_line(monkeypatch, workdir, gpt2_tiny):
    monkeypatch.setitem(sys.modules, "tensorrt", None)     # `import tensorrt` raises ImportError
    monkeypatch.setattr(trt_env, "cuda_available", lambda: False)
    cfg = make_cfg(workdir, backends=("trt",))
    with pytest.raises(UsageError) as excinfo:
        gpt2_trt.make_backend(gpt2_tiny, cfg, workdir)
    _one_line_usage_error(excinfo, "the trt backend needs TensorRT and a CUDA GPU", "tensorrt package",
                          "no CUDA device", "gpu-cu12")


def test_trt_without_gpu_is_one_line(standin, monkeypatch):
    monkeypatch.setattr(trt_env, "cuda_available", lambda: False)
    with pytest.raises(UsageError) as excinfo:
        trt_env.require_tensorrt()
    _one_line_usage_error(excinfo, "needs TensorRT and a CUDA GPU: no CUDA device is visible")
    assert "tensorrt package" not in str(excinfo.value)


def test_parser_errors_become_one_line(standin, tmp_path):
    doubles = toy_onnx(tmp_path / "d" / "model.onnx", dtype=TensorProto.DOUBLE)
    with pytest.raises(UsageError) as excinfo:
        build_toy(tmp_path, doubles)
    _one_line_usage_error(excinfo, "TensorRT cannot parse", "unsupported data type DOUBLE")


# --------------------------------------------------------------------------- build flags
@pytest.mark.parametrize("version,fp16,strongly_typed", [(trt_standin.VERSION_10, True, True),
                                                         (trt_standin.VERSION_10, False, False),
                                                         (trt_standin.VERSION_11, False, True)])
def test_precision_comes_from_the_graph(monkeypatch, tmp_path, toy, version, fp16, strongly_typed):
    trt_standin.install(monkeypatch, version)
    engine = build_toy(tmp_path, toy, fp16=fp16)
    assert trt_standin.plan_header(engine)["strongly_typed"] is strongly_typed
    assert ("fp16" if fp16 else "fp32") in engine.parent.name


def test_build_flags_reach_the_builder(monkeypatch, tmp_path, toy):
    trt_standin.install(monkeypatch, trt_standin.VERSION_10)
    settings = TrtSettings(workspace_mib=64, nvtx_verbose=True)
    header = trt_standin.plan_header(build_toy(tmp_path, toy, settings))
    assert header["memory_pools"] == {"WORKSPACE": 64 << 20}
    assert header["profiling_verbosity"] == "DETAILED"
    assert header["profiles"] == [{"x": [[1, 1], [2, 8], [4, 16]]}]


@pytest.mark.parametrize("version", [trt_standin.VERSION_10, trt_standin.VERSION_11])
def test_tf32_is_off_unless_asked_for(monkeypatch, tmp_path, toy, version):
    """TensorRT turns TF32 on by default; fp32 engines must compare with fp32 PyTorch."""
    trt_standin.install(monkeypatch, version)
    assert trt_standin.plan_header(build_toy(tmp_path, toy))["builder_flags"] == []
    assert trt_standin.plan_header(build_toy(tmp_path, toy, TrtSettings(tf32=True)))["builder_flags"] == ["TF32"]
    assert parse_args(["run", "GPT2", "trt"]).trt.tf32 is False
    assert parse_args(["run", "GPT2", "trt", "--tf32"]).trt.tf32 is True


@pytest.mark.parametrize("version", [trt_standin.VERSION_10, trt_standin.VERSION_11])
def test_preview_flag_is_a_documented_no_op(monkeypatch, tmp_path, toy, version):
    """PROFILE_SHARING_0806 is deprecated and always on in 10 and gone in 11: nothing to set."""
    trt_standin.install(monkeypatch, version)
    plain = build_toy(tmp_path, toy)
    flagged = build_toy(tmp_path, toy, TrtSettings(disable_preview_dynamic_shapes=True))
    assert flagged == plain                                   # same engine: the flag is not in the key
    assert trt_standin.plan_header(plain)["preview_features"] == {}
    help_text = " ".join(build_parser().format_help().split())
    assert "no effect" in help_text.split("--disable-preview-dynamic-shapes", 2)[2][:200]


def test_timing_cache_is_kept_and_merged_in_the_working_dir(standin, tmp_path, toy):
    settings = TrtSettings(use_timing_cache=True)
    first = build_toy(tmp_path, toy, settings)
    cache_file = first.parent.parent / TIMING_CACHE_FILE
    entries = json.loads(cache_file.read_bytes().split(b"\x00", 1)[1])["entries"]
    assert len(entries) == 1
    build_toy(tmp_path, toy, settings, ranges={**TOY_RANGES, "seq": (1, 4, 8)})
    assert trt_standin.plan_header(first)["timing_cache"] is True
    merged = json.loads(cache_file.read_bytes().split(b"\x00", 1)[1])["entries"]
    assert len(merged) == 2 and entries[0] in merged


def test_unreadable_timing_cache_is_replaced_with_a_warning(standin, tmp_path, toy, caplog):
    settings = TrtSettings(use_timing_cache=True)
    first = build_toy(tmp_path, toy, settings)
    cache_file = first.parent.parent / TIMING_CACHE_FILE
    cache_file.write_bytes(b"not a timing cache")
    with caplog.at_level(logging.WARNING, logger="NNDF.export.trt_engines"):
        build_toy(tmp_path, toy, settings, ranges={**TOY_RANGES, "seq": (1, 4, 8)})
    assert "ignoring the timing cache" in caplog.text
    assert len(json.loads(cache_file.read_bytes().split(b"\x00", 1)[1])["entries"]) == 1
