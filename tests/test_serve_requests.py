"""What the served model does with a list of requests, without a server: each request
checked alone, compatible ones generated as one padded batch, every answer token for
token what the request gets alone, and a stream that adds up to the same text."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_cfg
from NNDF.base.errors import UsageError
from NNDF.cli import parse_args
from NNDF.registry import get_family
from NNDF.runtime.generation import GenerationOutput
from NNDF.serving.requests import OPTIONAL_INPUTS, answer_all, batch_key, parse_request, stream_answer

PROMPTS = ["The lighthouse keeper", "Clara baked bread every morning for the whole village", "Ben",
           "A storm rolled in over the harbour", "Tom"]


@pytest.fixture(scope="module")
def onnxrt(workdir, gpt2_tiny):
    cfg = make_cfg(workdir, "--use-cache", backends=("onnxrt",))
    module = __import__(get_family("GPT2").package + ".onnxrt", fromlist=["make_backend"])
    return cfg, module.make_backend(gpt2_tiny, cfg, workdir)


def request(loaded, defaults, prompt, max_new=None, beams=None, **settings):
    """A parsed request, its optional inputs typed as the served model declares them."""
    inputs = {"text": np.array([[prompt.encode()]], dtype=np.object_)}
    values = {"max_new_tokens": max_new, "num_beams": beams, **settings}
    types = {spec.name: spec.dtype for spec in OPTIONAL_INPUTS}
    inputs.update({name: np.array([[v]], types[name]) for name, v in values.items() if v is not None})
    return parse_request(inputs, loaded, defaults)


class CountingBackend:
    """Records the batch sizes a backend is asked for."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def generate(self, ids, mask, settings, on_step=None) -> GenerationOutput:
        self.batches.append(ids.shape[0])
        return self.inner.generate(ids, mask, settings, on_step)


def test_batched_answers_equal_answers_alone(gpt2_tiny, onnxrt):
    cfg, backend = onnxrt
    reqs = [request(gpt2_tiny, cfg.generation, p, n) for p, n in zip(PROMPTS, (9, 4, 12, 7, 1))]
    counting = CountingBackend(backend)
    together = answer_all(reqs, gpt2_tiny, counting, max_batch=16)
    assert counting.batches == [5]   # greedy requests of different lengths and max_new_tokens: one batch
    alone = [answer_all([r], gpt2_tiny, backend, 16)[0] for r in reqs]
    assert together == alone
    # the reference: HF generate on PyTorch, one prompt at a time
    frameworks = __import__("GPT2.frameworks", fromlist=["make_backend"]).make_backend(gpt2_tiny, cfg, None)
    assert alone == [answer_all([r], gpt2_tiny, frameworks, 16)[0] for r in reqs]
    assert len({a[len(p):] for a, p in zip(alone, PROMPTS)}) == len(PROMPTS)   # real, different answers


def test_beam_requests_batch_only_with_equal_settings(gpt2_tiny, onnxrt):
    cfg, backend = onnxrt
    reqs = [request(gpt2_tiny, cfg.generation, PROMPTS[0], 6, 3), request(gpt2_tiny, cfg.generation, PROMPTS[1], 6, 3),
            request(gpt2_tiny, cfg.generation, PROMPTS[2], 8, 3), request(gpt2_tiny, cfg.generation, PROMPTS[3], 5)]
    assert batch_key(reqs[0], gpt2_tiny) == batch_key(reqs[1], gpt2_tiny) != batch_key(reqs[2], gpt2_tiny)
    counting = CountingBackend(backend)
    together = answer_all(reqs, gpt2_tiny, counting, max_batch=16)
    assert sorted(counting.batches) == [1, 1, 2]
    assert together == [answer_all([r], gpt2_tiny, backend, 16)[0] for r in reqs]
    # max_batch counts rows: 3 beams each, so at most 2 requests per batch of 6 rows
    counting.batches.clear()
    answer_all([reqs[0], reqs[1], reqs[0]], gpt2_tiny, counting, max_batch=6)
    assert counting.batches == [2, 1]


@pytest.mark.parametrize("inputs, message", [
    ({}, "no 'text' input"),
    ({"text": np.array([[b"a"], [b"b"]], dtype=np.object_)}, "holds 2 strings"),
    ({"text": np.array([[b""]], dtype=np.object_)}, "'text' is empty"),
    ({"text": np.array([[b"hi"]], dtype=np.object_), "max_new_tokens": np.array([[-4]], np.int32)},
     "max_new_tokens must be at least 1, got -4"),
    ({"text": np.array([[b"hi"]], dtype=np.object_), "num_beams": np.array([[0]], np.int32)}, "num_beams must be"),
    ({"text": np.array([["word " * 200]], dtype=np.object_)}, "exceeds the model's 128 positions"),
    ({"text": np.array([[b"hi"]], dtype=np.object_), "num_beams": np.array([[17]], np.int32)},
     "num_beams must be at most 16, got 17"),
    ({"text": np.array([[b"hi"]], dtype=np.object_), "temperature": np.array([[0.0]], np.float32)},
     "temperature must be above 0, got 0.0"),
    ({"text": np.array([[b"hi"]], dtype=np.object_), "top_p": np.array([[1.5]], np.float32)},
     "top_p must be at most 1, got 1.5"),
    ({"text": np.array([[b"hi"]], dtype=np.object_), "top_k": np.array([[-1]], np.int32)},
     "top_k must be at least 0, got -1"),
    ({"text": np.array([[b"hi"]], dtype=np.object_), "seed": np.array([[-3]], np.int64)},
     "seed must be at least 0, got -3"),
    ({"text": np.array([[b"hi"]], dtype=np.object_), "do_sample": np.array([[True]]),
      "num_beams": np.array([[2]], np.int32)}, "beam sampling"),
])
def test_bad_requests_name_the_problem(gpt2_tiny, onnxrt, inputs, message):
    cfg, _ = onnxrt
    with pytest.raises(UsageError, match=message):
        parse_request(inputs, gpt2_tiny, cfg.generation)


def test_stream_adds_up_to_the_answer(gpt2_tiny, onnxrt):
    cfg, backend = onnxrt
    for prompt, n in ((PROMPTS[0], 12), (PROMPTS[2], 30)):
        req = request(gpt2_tiny, cfg.generation, prompt, n)
        pieces: list[str] = []
        stream_answer(req, gpt2_tiny, backend, pieces.append)
        assert len(pieces) > 1
        assert prompt + "".join(pieces) == answer_all([req], gpt2_tiny, backend, 16)[0]
    with pytest.raises(UsageError, match="streaming needs num_beams 1"):
        stream_answer(request(gpt2_tiny, cfg.generation, "hi", 4, 2), gpt2_tiny, backend, print)


SAMPLED = dict(do_sample=True, temperature=0.8, top_k=20, top_p=0.9, repetition_penalty=1.2)


def test_sampling_inputs_reach_the_generation_settings(gpt2_tiny, onnxrt):
    cfg, _ = onnxrt
    req = request(gpt2_tiny, cfg.generation, PROMPTS[0], 6, seed=11, **SAMPLED)
    s = req.settings
    assert (s.do_sample, s.top_k, s.seed, s.max_new_tokens) == (True, 20, 11, 6)
    assert (s.temperature, s.top_p, s.repetition_penalty) == pytest.approx((0.8, 0.9, 1.2))
    assert not request(gpt2_tiny, cfg.generation, PROMPTS[0], 6, do_sample=False).settings.do_sample


def test_a_seed_gives_one_answer_whatever_else_is_in_the_batch(gpt2_tiny, onnxrt):
    cfg, backend = onnxrt
    sampled = [request(gpt2_tiny, cfg.generation, PROMPTS[i % 2], 12, seed=seed, **SAMPLED)
               for i, seed in enumerate((1, 2, 1, 3))]
    greedy = [request(gpt2_tiny, cfg.generation, p, 12) for p in PROMPTS[2:4]]
    counting = CountingBackend(backend)
    together = answer_all(sampled + greedy, gpt2_tiny, counting, max_batch=16)
    assert sorted(counting.batches) == [1, 1, 1, 1, 2]   # each sampled request alone, the greedy ones together
    alone = [answer_all([r], gpt2_tiny, backend, 16)[0] for r in sampled]
    assert together[:4] == alone
    # the sampled answers are really sampled: seeds change them, and none is the greedy answer
    greedy_alone = answer_all([request(gpt2_tiny, cfg.generation, PROMPTS[0], 12)], gpt2_tiny, backend, 16)[0]
    reseeded = [request(gpt2_tiny, cfg.generation, PROMPTS[0], 12, seed=s, **SAMPLED) for s in (4, 5)]
    assert len({alone[0], *answer_all(reseeded, gpt2_tiny, backend, 16)}) > 1
    assert greedy_alone not in alone


def test_a_sampled_stream_adds_up_to_the_sampled_answer(gpt2_tiny, onnxrt):
    cfg, backend = onnxrt
    req = request(gpt2_tiny, cfg.generation, PROMPTS[1], 20, seed=7, **SAMPLED)
    pieces: list[str] = []
    stream_answer(req, gpt2_tiny, backend, pieces.append)
    assert len(pieces) > 1
    assert PROMPTS[1] + "".join(pieces) == answer_all([req], gpt2_tiny, backend, 16)[0]


@pytest.mark.parametrize("family, backend", [("GPT2", "frameworks"), ("T5", "onnxrt")])
def test_every_family_and_backend_streams(workdir, family, backend):
    """Streaming watches the generation's on_step, which every backend calls: PyTorch's generate
    through a streamer, and an encoder-decoder's answer (no prompt in it) streams whole."""
    cfg = parse_args(["run", family, backend, "--working-dir", str(workdir.root), "--use-cache"])
    fam = get_family(family)
    loaded = fam.load(cfg)
    made = __import__(f"{fam.package}.{backend}", fromlist=["make_backend"]).make_backend(loaded, cfg, workdir)
    req = request(loaded, cfg.generation, "The lighthouse keeper", 12)
    pieces: list[str] = []
    stream_answer(req, loaded, made, pieces.append)
    answer = answer_all([req], loaded, made, 16)[0]
    prefix = "" if loaded.model.config.is_encoder_decoder else req.prompt
    assert len(pieces) > 1 and prefix + "".join(pieces) == answer
