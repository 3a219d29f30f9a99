"""Fault tests: what a hostile environment does to a run (issue 16), one class per section.

Each test would fail on a toolkit that trusted changed bytes, left crash debris, let
--cleanup race with builds, printed tracebacks for environment failures, worked before
refusing, ran out of memory, scored the wrong tokens, or took bad data for strings.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, call, one_line_error
from NNDF.base.errors import UsageError
from NNDF.export import workdir as wdmod
from NNDF.export.workdir import MANIFEST, WorkingDir, recorded_digest
from NNDF.kinds.makers import make_backends

KEY = {"what": "toy"}






def toy_build(wd: WorkingDir, name: str = "toy", payload: bytes = b"x" * 4096, calls: list | None = None):
    def produce(tmp: Path) -> dict:
        (tmp / "data.bin").write_bytes(payload)
        if calls is not None:
            calls.append(name)
        return {"note": "toy"}

    return wd.build(wd.artifact_dir("fam", name), KEY, ("data.bin",), produce)


def onnx_files(wd: Path) -> list[Path]:
    return sorted(wd.glob("**/*.onnx*"))


# --------------------------------------------------------------------------- 1. integrity
# with the cache, onnxrt's decoder written from the weights; without it, the export and ONNX Runtime's fused copy
@pytest.mark.parametrize("flags,graphs", [(("--use-cache",), 1), ((), 2)], ids=["from-weights", "traced"])
def test_changed_bytes_of_the_same_size_are_rebuilt_not_trusted(capsys, tmp_path, flags, graphs):
    """Flipping every 97th byte of the cached weights in place must not give other tokens."""
    wd = tmp_path / "w"
    args = ("run", "GPT2", "onnxrt", *flags, "--working-dir", wd, "--iterations", "1")
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    assert call(capsys, *args, "--save-output-fpath", first)[0] == 0
    cached = list(wd.glob("GPT2/gpt2-tiny/onnx/decoder*/model.onnx.data"))
    assert len(cached) == graphs
    for data in cached:
        blob = bytearray(data.read_bytes())
        blob[::97] = bytes(b ^ 0xFF for b in blob[::97])
        data.write_bytes(bytes(blob))      # same size, other bytes
    code, _, err = call(capsys, *args, "--save-output-fpath", second)
    assert code == 0, err
    assert "model.onnx.data has different bytes" in err
    outputs = [{name: ex["output"] for name, ex in json.loads(f.read_text())["results"]["onnxrt"]["examples"].items()}
               for f in (first, second)]   # (the examples also hold their latencies, which vary)
    assert outputs[0] == outputs[1]


def test_verify_hashes_files_whose_mtime_was_kept(tmp_path):
    wd = WorkingDir(tmp_path / "w")
    calls = []
    art = toy_build(wd, calls=calls)
    f = art.file("data.bin")
    st = f.stat()
    f.write_bytes(b"y" * 4096)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))   # a writer that preserved the mtime
    toy_build(wd, calls=calls)
    assert calls == ["toy"]                            # size and mtime unchanged: trusted (documented)
    toy_build(WorkingDir(tmp_path / "w", verify=True), calls=calls)
    assert calls == ["toy", "toy"] and f.read_bytes() == b"x" * 4096


def test_same_bytes_with_a_new_mtime_are_hashed_once_and_trusted(tmp_path, monkeypatch):
    wd = WorkingDir(tmp_path / "w")
    calls = []
    f = toy_build(wd, calls=calls).file("data.bin")
    os.utime(f, (1, 1))                                # touched: content unchanged
    hashed = []
    real = wdmod.file_digest
    monkeypatch.setattr(wdmod, "file_digest", lambda p, *a: hashed.append(Path(p).name) or real(p, *a))
    toy_build(wd, calls=calls)
    toy_build(wd, calls=calls)
    assert calls == ["toy"] and hashed == ["data.bin"]  # hashed once, its recorded mtime restored


def test_engine_key_reuses_the_recorded_digest_while_size_and_mtime_hold(tmp_path, monkeypatch):
    """Issue 11.10: multi-GB weights are not re-hashed on every run."""
    from NNDF.base.config import TrtSettings
    from NNDF.export.trt_engines import engine_key

    wd = WorkingDir(tmp_path / "w")
    f = toy_build(wd).file("data.bin")
    hashed = []
    real = wdmod.file_digest
    monkeypatch.setattr(wdmod, "file_digest", lambda p, *a: hashed.append(Path(p).name) or real(p, *a))
    monkeypatch.setattr("NNDF.export.trt_engines.model_and_data_files", lambda path: [path])
    key = engine_key(f, {}, TrtSettings(), False, {"name": "gpu", "compute_capability": "8.6"}, "11.4")
    assert hashed == [] and key["onnx"]["data.bin"] == real(f)
    f.write_bytes(b"z" * 4096)
    assert engine_key(f, {}, TrtSettings(), False, {"name": "gpu", "compute_capability": "8.6"}, "11.4") != key
    assert hashed == ["data.bin"]


def test_files_and_directories_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(wdmod.os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
                        or real_fsync(fd))
    monkeypatch.setattr(wdmod.os, "replace", lambda a, b: events.append(("replace", str(a))) or real_replace(a, b))
    art = toy_build(WorkingDir(tmp_path / "w"))
    rename = next(i for i, e in enumerate(events) if e[0] == "replace")
    tmp = events[rename][1]
    synced_before = {e[1] for e in events[:rename] if e[0] == "fsync"}
    assert {f"{tmp}/data.bin", f"{tmp}/{MANIFEST}", tmp} <= synced_before
    assert ("fsync", str(art.path.parent)) in events[rename:]


@pytest.mark.parametrize("manifest", ['{"key": {"what": "toy"}, "files": {"data.bin": 4096}}',   # an older shape
                                      "[1, 2, 3]", '{"files": "x"}', "{not json"])
def test_a_manifest_of_the_wrong_shape_is_rebuilt(tmp_path, manifest, capsys):
    wd = WorkingDir(tmp_path / "w")
    calls = []
    art = toy_build(wd, calls=calls)
    (art.path / MANIFEST).write_text(manifest)
    again = toy_build(wd, calls=calls)
    assert calls == ["toy", "toy"] and again.manifest["files"]["data.bin"]["size"] == 4096
    assert "rebuilding" in capsys.readouterr().err


# --------------------------------------------------------------------------- 2. crash leftovers
FORK = multiprocessing.get_context("fork")   # children need only NNDF.export.workdir, already imported


def _writer(root: str, name: str, ready: str, hold_s: float) -> None:
    """A build that stops inside produce() long enough to be killed or swept around."""
    def produce(tmp: Path) -> None:
        (tmp / "data.bin").write_bytes(b"half")
        Path(ready).write_text(str(tmp))
        time.sleep(hold_s)
        (tmp / "data.bin").write_bytes(b"x" * 4096)

    WorkingDir(root).build(Path(root) / "fam" / name, KEY, ("data.bin",), produce)


def _start(target, args: tuple, ready: Path):
    child = FORK.Process(target=target, args=args)
    child.start()
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert time.monotonic() < deadline and child.is_alive(), f"{target.__name__} never got ready"
        time.sleep(0.02)
    return child


def _start_writer(tmp_path: Path, name: str, hold_s: float):
    ready = tmp_path / f"ready-{name}-{time.monotonic_ns()}"
    child = _start(_writer, (str(tmp_path / "w"), name, str(ready), hold_s), ready)
    return child, Path(ready.read_text())


def test_a_killed_writers_temp_dir_is_swept_and_a_live_ones_is_not(tmp_path):
    wd = WorkingDir(tmp_path / "w")
    dead, dead_tmp = _start_writer(tmp_path, "slow", 60)
    os.kill(dead.pid, signal.SIGKILL)                  # what kill -9 / an OOM kill does mid-export
    dead.join(10)
    assert dead_tmp.is_dir()
    live, live_tmp = _start_writer(tmp_path, "slow", 2)
    toy_build(wd, "other")                             # a later run working in the same directory
    assert not dead_tmp.exists()                       # the dead writer's temp is gone
    assert live_tmp.is_dir()                           # the live writer's is untouched
    live.join(60)
    assert live.exitcode == 0
    assert sorted(p.name for p in (tmp_path / "w" / "fam").iterdir() if not p.name.endswith((".lock", ".use"))) \
        == ["other", "slow"]


def test_sigterm_mid_export_leaves_no_temp_dir(tmp_path):
    """`timeout` and `docker stop` send SIGTERM: the run ends and removes what it was writing."""
    wd = tmp_path / "w"
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); import NNDF.export.onnx_export as e; "
            "real = e.attach_weights\n"
            "def slow(*a):\n    real(*a); print('writing', flush=True); time.sleep(60)\n"
            "e.attach_weights = slow\nimport run; sys.exit(run.main())")
    child = subprocess.Popen([sys.executable, "-c", code, "run", "GPT2", "onnxrt", "--working-dir", str(wd)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    assert list(wd.glob("GPT2/gpt2-tiny/onnx/.*.tmp-*"))
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode != 0 and "Traceback" not in err, err
    assert not list(wd.glob("GPT2/gpt2-tiny/onnx/.*.tmp-*"))


def test_a_failed_result_write_leaves_nothing_next_to_the_target(capsys, tmp_path, monkeypatch):
    out = tmp_path / "res" / "r.json"
    args = ("run", "GPT2", "onnxrt", "--working-dir", tmp_path / "w", "--iterations", "1")
    assert call(capsys, *args)[0] == 0                 # exported: the next run writes only its result

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    one_line_error(capsys, *args, "--save-output-fpath", out, match="no space left")
    assert list(out.parent.iterdir()) == []


# --------------------------------------------------------------------------- 3. --cleanup races
def _build_and_exit(root: str) -> None:
    toy_build(WorkingDir(root), "a")


def _use(root: str, ready: str, out: str) -> None:
    art = toy_build(WorkingDir(root), "a")
    Path(ready).write_text("using")
    time.sleep(1.5)                                    # the cleanups run meanwhile
    Path(out).write_text(art.file("data.bin").read_text())


def _cleanup_then_build(root: str, out: str) -> None:
    wd = WorkingDir(root)
    wd.cleanup("fam")
    a = toy_build(wd, "a")
    b = wd.build(wd.artifact_dir("fam", "b"), KEY, ("data.bin",), lambda tmp: (tmp / "data.bin").write_bytes(b"x"))
    Path(out).write_text(a.file("data.bin").read_text() + b.file("data.bin").read_text()[:1])


def test_concurrent_cleanups_and_runs_all_succeed(tmp_path):
    """Three --cleanup runs beside one run using an artifact and one building another."""
    root = str(tmp_path / "w")
    first = FORK.Process(target=_build_and_exit, args=(root,))
    first.start()
    first.join(60)
    user = _start(_use, (root, str(tmp_path / "using"), str(tmp_path / "user")), tmp_path / "using")
    writer, _ = _start_writer(tmp_path, "b", 1.5)      # a build in progress
    cleaners = [FORK.Process(target=_cleanup_then_build, args=(root, str(tmp_path / f"c{i}"))) for i in range(3)]
    for p in cleaners:
        p.start()
    for p in [user, writer, *cleaners]:
        p.join(120)
    assert [p.exitcode for p in [user, writer, *cleaners]] == [0] * 5
    assert (tmp_path / "user").read_text() == "x" * 4096
    for i in range(3):
        assert (tmp_path / f"c{i}").read_text() == "x" * 4097
    fam = tmp_path / "w" / "fam"
    assert sorted(p.name for p in fam.iterdir() if not p.name.endswith((".lock", ".use"))) == ["a", "b"]


def test_cleanup_removes_what_nobody_uses(tmp_path):
    root = tmp_path / "w"
    toy_build(WorkingDir(root), "a")
    done = tmp_path / "done"
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from NNDF.export.workdir import WorkingDir; "
            f"WorkingDir({str(root)!r}).cleanup('fam'); open({str(done)!r}, 'w').write('ok')")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    # this process used "a", so another process's cleanup kept it
    assert (root / "fam" / "a" / MANIFEST).is_file()
    wdmod._used.pop(wdmod.use_file(root / "fam" / "a")).close()   # as if this process had exited
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert not (root / "fam" / "a").exists()


# --------------------------------------------------------------------------- 4. environment failures: one line
def test_a_full_disk_mid_export_is_one_line_and_leaves_no_temp(capsys, tmp_path, monkeypatch):
    import NNDF.export.onnx_export as export

    def fill_the_disk(proto, module, data_path):
        with open(data_path, "wb") as f:
            f.write(b"\0" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device", str(data_path))

    monkeypatch.setattr(export, "attach_weights", fill_the_disk)
    wd = tmp_path / "w"
    one_line_error(capsys, "run", "GPT2", "onnxrt", "--working-dir", wd, match="no space left on the device")
    assert not [p for p in wd.rglob("*") if ".tmp-" in p.name or p.suffix in (".onnx", ".data")]


@pytest.mark.parametrize("where", ["a file", "/proc/self"])
def test_an_unusable_working_dir_is_one_line(capsys, tmp_path, where):
    if where == "a file":
        target = tmp_path / "plain-file"
        target.write_text("not a directory")
    else:
        target = Path(where)
    one_line_error(capsys, "run", "GPT2", "onnxrt", "--working-dir", target, match="cannot use working dir")


def _tiny_t5():
    import torch

    from T5.T5ModelConfig import _random_tiny

    torch.manual_seed(0)       # as family.load seeds before building, so retraining gives the same bytes
    return _random_tiny(False)


def test_a_damaged_tiny_model_cache_is_retrained(tmp_path, monkeypatch):
    from NNDF.models import tiny_training

    monkeypatch.setenv("HF_TRT_TOOLKIT_CACHE", str(tmp_path / "cache"))
    trainings = []
    real = tiny_training.memorize
    monkeypatch.setattr(tiny_training, "memorize", lambda *a: trainings.append(1) or real(*a))
    model, _ = tiny_training.trained_tiny("t5-test", 0, _tiny_t5, steps=2, lr=1e-2)
    weights, = (tmp_path / "cache").glob("tiny/t5-test-*/model.pt")
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 3])             # truncated, e.g. by a full disk or a crash elsewhere
    again, _ = tiny_training.trained_tiny("t5-test", 0, _tiny_t5, steps=2, lr=1e-2)
    assert trainings == [1, 1] and weights.read_bytes() == good   # retrained: training is seeded
    st = weights.stat()
    weights.write_bytes(b"\0" * len(good))                  # damaged with size and mtime kept
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    tiny_training.trained_tiny("t5-test", 0, _tiny_t5, steps=2, lr=1e-2)
    assert trainings == [1, 1, 1]
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert (a == b).all()


@pytest.mark.parametrize("variable", ["HF_TRT_TOOLKIT_CACHE", "HOME"])
def test_a_cache_location_that_is_a_file_is_one_line_before_training(capsys, tmp_path, monkeypatch, variable):
    from NNDF.models import tiny_training

    plain = tmp_path / "plain-file"
    plain.write_text("x")
    monkeypatch.delenv("HF_TRT_TOOLKIT_CACHE", raising=False)
    monkeypatch.setenv(variable, str(plain))
    monkeypatch.setattr(tiny_training, "memorize", lambda *a: pytest.fail("trained before checking the cache"))
    one_line_error(capsys, "run", "T5", "--working-dir", tmp_path / "w", match="cannot use tiny-model cache")


def test_a_chat_line_that_is_not_utf8_or_not_tokenizable_errors_alone(gpt2_tiny, workdir, monkeypatch, capsys):
    import io

    from NNDF.actions import chat
    from NNDF.registry import get_family
    from conftest import make_cfg

    cfg = make_cfg(workdir, "--output-seq-len", "3", action="chat")
    backends = make_backends(get_family("GPT2"), gpt2_tiny, cfg, workdir)
    tokenizer_class = type(gpt2_tiny.tokenizer)
    real_call = tokenizer_class.__call__

    def fragile(self, text, *a, **k):
        if text == "BOOM":
            raise RuntimeError("the tokenizer broke")
        return real_call(self, text, *a, **k)

    monkeypatch.setattr(tokenizer_class, "__call__", fragile)
    stdin = io.TextIOWrapper(io.BytesIO(b"The lighthouse\n\xff\xfe caf\xe9\nBOOM\nBen\nexit\n"), encoding="utf-8")
    result = chat.converse(cfg, gpt2_tiny, backends, stdin=stdin)
    out = capsys.readouterr().out
    assert [t["input"] for t in result["turns"]] == ["The lighthouse", "Ben"]
    assert "error: this line is not UTF-8 text" in out and "error: the tokenizer cannot encode this line" in out


# --------------------------------------------------------------------------- 5. refuse before working
@pytest.mark.parametrize("target, match", [("", "is empty"), ("/proc/result.json", "cannot be written"),
                                           ("{tmp}", "is a directory"), ("{file}/r.json", "is a file, not a folder")])
def test_an_unwritable_result_path_is_refused_at_start(capsys, tmp_path, target, match):
    plain = tmp_path / "plain-file"
    plain.write_text("x")
    wd = tmp_path / "w"
    target = target.format(tmp=tmp_path, file=plain)
    one_line_error(capsys, "run", "GPT2", "onnxrt", "--working-dir", wd, "--save-output-fpath", target, match=match)
    assert not onnx_files(wd)


def test_bad_data_files_and_long_prompts_are_refused_before_any_export(capsys, tmp_path):
    wd = tmp_path / "w"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "wrong key"}\n')
    one_line_error(capsys, "accuracy", "GPT2", "onnxrt", "--working-dir", wd, "--dataset-path", bad, match="line 2")
    short = tmp_path / "short.jsonl"
    short.write_text('{"text": "Hi"}\n')
    one_line_error(capsys, "accuracy", "GPT2", "onnxrt", "--working-dir", wd, "--dataset-path", short, match="too few")
    ck = tmp_path / "long.toml"
    ck.write_text('[GPT2.all.default.all.long]\ninput = "%s"\nlabel = "x"\n' % ("word " * 200))
    one_line_error(capsys, "run", "GPT2", "onnxrt", "--working-dir", wd, "--checkpoint", ck, match="exceeds the model's")
    ck.write_text('[GPT2.all.default.all.x]\ninput = "a"\nlabel = 3\n')
    one_line_error(capsys, "compare", "GPT2", "frameworks", "onnxrt", "--working-dir", wd, "--checkpoint", ck,
                   match="[GPT2.all.default.all.x]")
    assert not onnx_files(wd)


# --------------------------------------------------------------------------- 6. bounded memory
@pytest.mark.parametrize("flag, lower", [("--batch-size", "lower --batch-size"), ("--num-beams", "lower --num-beams")])
def test_a_run_that_cannot_fit_in_memory_is_refused_with_the_estimate(capsys, tmp_path, flag, lower):
    wd = tmp_path / "w"
    start = time.monotonic()
    line = one_line_error(capsys, "benchmark", "GPT2", "onnxrt", "--use-cache", flag, "1000000", "--input-seq-len", "16",
                          "--output-seq-len", "16", "--working-dir", wd, match=lower)
    assert "KV cache" in line and "1000000 rows x 32 positions" in line and "GiB of memory is available" in line
    assert time.monotonic() - start < 30 and not onnx_files(wd)


def test_the_estimate_counts_the_kv_cache_and_is_shown_by_info(capsys, tmp_path, gpt2_tiny):
    from NNDF.runtime.memory import Workload, estimate
    from conftest import make_cfg

    cfg = make_cfg(WorkingDir(tmp_path / "w"), "--use-cache", "--batch-size", "3", "--num-beams", "2",
                   "--input-seq-len", "20", "--output-seq-len", "10", action="benchmark", backends=("frameworks", "onnxrt"))
    est = estimate(cfg, gpt2_tiny, Workload(6, 20, 10))
    c = gpt2_tiny.config
    per_position = 2 * c.n_layer * c.n_embd * 4                   # keys and values of every layer, fp32
    assert est.rows == 6 and est.positions == 30
    assert est.kv_cache == 2 * 6 * 30 * per_position                # past and present
    assert est.sessions == est.weights                              # one ONNX Runtime session
    gpu_cfg = make_cfg(WorkingDir(tmp_path / "w"), "--use-cache", action="benchmark", backends=("trt",))
    on_gpu = estimate(gpu_cfg, gpt2_tiny, Workload(1, 20, gpu_cfg.generation.max_new_tokens))
    assert on_gpu.on_gpu == ("trt",) and on_gpu.kv_cache == on_gpu.sessions == 0   # GPU memory: not estimated
    assert "not counted: GPU memory of trt" in on_gpu.describe()
    code, out, _ = call(capsys, "benchmark", "GPT2", "--info", "--input-seq-len", "8", "--output-seq-len", "4",
                        "--iterations", "1", "--working-dir", tmp_path / "w")
    assert code == 0 and "memory: this run needs about" in out and "1 rows x 12 positions" in out


# --------------------------------------------------------------------------- 7. accuracy on long texts
def test_accuracy_scores_the_tail_of_a_text_longer_than_the_positions(capsys, tmp_path, gpt2_tiny):
    from NNDF.actions.accuracy import load_texts, teacher_forced_sequence

    long_text = " ".join(f"word{i}" for i in range(400)) + " and the lighthouse keeper smiled"
    ids = gpt2_tiny.tokenizer(long_text)["input_ids"]
    assert len(ids) > gpt2_tiny.max_positions
    seq, _ = teacher_forced_sequence(gpt2_tiny, long_text, 5)
    assert seq.tolist() == ids[-gpt2_tiny.max_positions:]        # the real last tokens, with all context that fits
    data = tmp_path / "long.jsonl"
    data.write_text(json.dumps({"text": long_text}) + "\n" + json.dumps({"text": "The lighthouse keeper smiled."}) + "\n")
    out_file = tmp_path / "acc.json"
    code, out, err = call(capsys, "accuracy", "GPT2", "--dataset-path", data, "--working-dir", tmp_path / "w",
                          "--save-output-fpath", out_file)
    assert code == 0, err
    drawn = load_texts(data, 20).count(long_text)   # 20 draws with replacement, as the demo sampled
    assert drawn and f"{drawn} of 20 samples are longer than the model's 128 positions" in out
    assert json.loads(out_file.read_text())["truncated_samples"] == drawn


# --------------------------------------------------------------------------- 8. data hygiene
def test_jsonl_with_a_byte_order_mark_is_read(tmp_path):
    from NNDF.actions.accuracy import load_texts

    data = tmp_path / "bom.jsonl"
    data.write_bytes(b"\xef\xbb\xbf" + b'{"text": "first"}\n{"text": "second"}\n')
    assert set(load_texts(data, 5)) == {"first", "second"}   # drawn with replacement; no mark in the first


@pytest.mark.parametrize("row, match", [('{"text": null}', "line 2: \"text\" is null, not a string"),
                                        ('{"text": 5}', "line 2: \"text\" is an integer, not a string"),
                                        ('{"text": ["a"]}', "line 2: \"text\" is an array, not a string"),
                                        ('"just a string"', "line 2 is not a JSON object")])
def test_a_non_string_text_is_an_error_naming_the_line(capsys, tmp_path, row, match):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "fine text here"}\n' + row + "\n")
    one_line_error(capsys, "accuracy", "GPT2", "--working-dir", tmp_path / "w", "--dataset-path", data, match=match)


def test_result_files_get_the_usual_permissions(capsys, tmp_path):
    out_file = tmp_path / "r.json"
    old = os.umask(0o022)
    try:
        assert call(capsys, "run", "GPT2", "--working-dir", tmp_path / "w", "--iterations", "1",
                    "--save-output-fpath", out_file)[0] == 0
    finally:
        os.umask(old)
    assert out_file.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
