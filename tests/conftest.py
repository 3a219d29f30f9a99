"""Shared fixtures: one tiny GPT2 and one working dir for the whole session, so
each graph is exported once and every test reuses it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(2)

from NNDF.cli import parse_args  # noqa: E402
from NNDF.registry import get_family  # noqa: E402
from NNDF.export.workdir import WorkingDir  # noqa: E402


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> WorkingDir:
    return WorkingDir(tmp_path_factory.mktemp("work"))


def call(capsys, *argv):
    """run.py's main on argv (each item str()-ed): (exit code, stdout, stderr)."""
    import run as run_py

    code = run_py.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, *argv, match: str) -> str:
    """run.py on argv must exit 2 with exactly one `error:` line, containing `match`, and no traceback."""
    code, out, err = call(capsys, *argv)
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and match in lines[0], err
    assert "Traceback" not in err
    return lines[0]


def concurrently(calls: list, gap_s: float | None = None) -> list:
    """Run each call on a thread of its own, all released at once (gap_s None) or started gap_s apart;
    their results in order, an exception standing for a call that raised it."""
    import threading
    import time

    results: list = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i, call):
        if gap_s is None:
            start.wait()
        else:
            time.sleep(i * gap_s)
        try:
            results[i] = call()
        except Exception as e:  # the caller inspects it
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    return results


def make_cfg(workdir: WorkingDir, *flags: str, action: str = "run", backends: tuple[str, ...] = ("frameworks",)):
    return parse_args([action, "GPT2", *backends, "--working-dir", str(workdir.root), *flags])


@pytest.fixture(scope="session")
def gpt2_tiny(workdir):
    return get_family("GPT2").load(make_cfg(workdir))


@pytest.fixture(scope="session")
def gpt2_512(workdir, tmp_path_factory):
    """(loaded, folder): tiny GPT2 given 512 positions (with_positions, as `benchmark --n-positions` does) and
    saved as a HuggingFace checkpoint, for `--torch-dir`: long answers (serving) and untruncated texts (lm-eval)."""
    family = get_family("GPT2")
    cfg = make_cfg(workdir)
    loaded = family.with_positions(family.load(cfg), 512, cfg.seed)
    folder = tmp_path_factory.mktemp("checkpoint") / "tiny-gpt2-512"
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return loaded, folder


@pytest.fixture(scope="session")
def prompts(gpt2_tiny):
    """Three prompts of different lengths, left-padded: the batch shape that breaks naive exports."""
    texts = ["The lighthouse keeper", "Clara baked bread every morning for the whole village", "Ben"]
    enc = gpt2_tiny.tokenizer(texts, return_tensors="np", padding=True, padding_side="left")
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


@pytest.fixture(scope="module")
def standin():
    """The CPU stand-in for TensorRT, installed for one test module and removed after it
    (test_trt_build.py overrides this with a per-test install)."""
    import trt_standin

    with pytest.MonkeyPatch.context() as mp:
        yield trt_standin.install(mp)


@pytest.fixture(scope="module")
def cuda():
    """Skips (with the reason) where PyTorch sees no CUDA device."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device is visible to PyTorch")


@pytest.fixture(scope="module")
def real_tensorrt(cuda):
    """TensorRT's real module, for the gpu-marked tests; skips where its native libraries are missing."""
    stand_in = sys.modules.get("tensorrt")
    if stand_in is not None and hasattr(stand_in, "_VERSION"):
        pytest.fail("the TensorRT stand-in leaked into the GPU tests")
    try:
        import tensorrt
    except (ImportError, OSError) as e:
        pytest.skip(f"TensorRT is not usable here: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    from NNDF.runtime import trt_env

    # INFO: what the builder chose (tactics, precisions, memory) is in the test log when a GPU run fails
    trt_env.logger_for(tensorrt).min_severity = tensorrt.Logger.INFO
    return tensorrt
