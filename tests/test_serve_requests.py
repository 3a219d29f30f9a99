"""What the served model does with a list of requests, without a server: each request
checked alone, compatible ones generated as one padded batch, every answer token for
token what the request gets alone, and a stream that adds up to the same text."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_cfg
from NNDF.errors import UsageError
from NNDF.generation import GenerationOutput
from NNDF.registry import get_family
from NNDF.serve_requests import answer_all, batch_key, parse_request, stream_answer

PROMPTS = ["The lighthouse keeper", "Clara baked bread every morning for the whole village", "Ben",
           "A storm rolled in over the harbour", "Tom"]


@pytest.fixture(scope="module")
def onnxrt(workdir, gpt2_tiny):
    cfg = make_cfg(workdir, "--use-cache", backends=("onnxrt",))
    module = __import__(get_family("GPT2").package + ".onnxrt", fromlist=["make_backend"])
    return cfg, module.make_backend(gpt2_tiny, cfg, workdir)


def request(loaded, defaults, prompt, max_new=None, beams=None):
    inputs = {"text": np.array([[prompt.encode()]], dtype=np.object_)}
    if max_new is not None:
        inputs["max_new_tokens"] = np.array([[max_new]], np.int32)
    if beams is not None:
        inputs["num_beams"] = np.array([[beams]], np.int32)
    return parse_request(inputs, loaded, defaults)


class CountingBackend:
    """Records the batch sizes a backend is asked for."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def generate(self, ids, mask, settings) -> GenerationOutput:
        self.batches.append(ids.shape[0])
        return self.inner.generate(ids, mask, settings)


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
    with pytest.raises(UsageError, match="greedy only"):
        stream_answer(request(gpt2_tiny, cfg.generation, "hi", 4, 2), gpt2_tiny, backend, print)
