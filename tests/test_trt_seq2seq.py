"""The trt path for encoder-decoders (encoder, cache generator and decoder engines) against
the CPU stand-in for TensorRT: same tokens as the frameworks backend."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from NNDF.base.errors import UsageError
from NNDF.cli import parse_args
from NNDF.registry import get_family
from test_seq2seq import PROMPTS
from test_trt_standin_generation import assert_plan_is_the_largest_step, record_step_sizes
from NNDF.kinds.makers import make_backends


@pytest.fixture(scope="module")
def t5(workdir):
    family = get_family("T5")
    return family, family.load(parse_args(["run", "T5", "--working-dir", str(workdir.root)]))


def _cfg(workdir, *flags):
    return parse_args(["run", "T5", "frameworks", "trt", "--working-dir", str(workdir.root), "--output-seq-len", "10",
                       *flags])


@pytest.mark.parametrize("beams", [1, 3])
@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "nocache"])
def test_trt_tokens_equal_frameworks(standin, t5, workdir, use_cache, beams):
    family, loaded = t5
    flags = ["--batch-size", "3", "--num-beams", str(beams)] + (["--use-cache"] if use_cache else [])
    cfg = _cfg(workdir, *flags)
    fw, trt = make_backends(family, loaded, cfg, workdir)
    enc = loaded.tokenizer(PROMPTS, return_tensors="np", padding=True)
    want = fw.generate(enc["input_ids"], enc["attention_mask"], cfg.generation).tokens
    np.testing.assert_array_equal(trt.generate(enc["input_ids"], enc["attention_mask"], cfg.generation).tokens, want)
    assert standin._errors == [] and standin._warnings == []   # no default-stream enqueue either


def test_prebuilt_engines_must_come_together(standin, t5, workdir, tmp_path):
    family, loaded = t5
    fake = tmp_path / "decoder.plan"
    fake.write_bytes(b"x")
    cfg = _cfg(workdir, "--use-cache", "--decoder-engine", str(fake))
    with pytest.raises(UsageError, match="prebuilt engines must be given together; missing --cache-generator-engine "
                                         "--encoder-engine"):
        make_backends(family, loaded, cfg, workdir)


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "nocache"])
def test_planned_sizes_are_the_largest_each_engine_sees(standin, t5, workdir, monkeypatch, use_cache):
    family, loaded = t5
    cfg = _cfg(workdir, "--batch-size", "3", *(["--use-cache"] if use_cache else []))
    _, trt = make_backends(family, loaded, cfg, workdir)
    recorded = {name: record_step_sizes(monkeypatch, session) for name, session in trt.steps.sessions.items()}
    enc = loaded.tokenizer(PROMPTS, return_tensors="np", padding=True)
    settings = dataclasses.replace(cfg.generation, min_new_tokens=cfg.generation.max_new_tokens)
    trt.generate(enc["input_ids"], enc["attention_mask"], settings)
    for planned, stepped in recorded.values():
        assert_plan_is_the_largest_step(planned, stepped)


@pytest.mark.parametrize("beams", [1, 3])
def test_cuda_graphs_give_frameworks_tokens_and_are_replayed(standin, t5, workdir, beams):
    family, loaded = t5
    cfg = _cfg(workdir, "--use-cache", "--batch-size", "3", "--num-beams", str(beams), "--use-cuda-graph")
    fw, trt = make_backends(family, loaded, cfg, workdir)
    enc = loaded.tokenizer(PROMPTS, return_tensors="np", padding=True)
    batches = [(enc["input_ids"], enc["attention_mask"]), (enc["input_ids"][::-1].copy(), enc["attention_mask"][::-1].copy())]
    for ids, mask in batches * 2:
        np.testing.assert_array_equal(trt.generate(ids, mask, cfg.generation).tokens,
                                      fw.generate(ids, mask, cfg.generation).tokens)
    assert standin._errors == [] and standin._warnings == []   # no default-stream enqueue either
    assert all(session._graphs.replays > 0 for session in trt.steps.sessions.values())
