"""lm-evaluation-harness against the OpenAI server: its `local-completions` model (token id prompts, echo,
logprobs; what loglikelihood tasks send) on a LAMBADA-style task over the shipped sample gives the accuracy
and perplexity that its `hf` model gives on the same local checkpoint in PyTorch (within 1e-3).

The checkpoint is tiny GPT2 given 512 positions (`with_positions`, as `benchmark --n-positions` does), so
no sample is truncated: lm-eval truncates a long context differently for the two models. A random model
gets no LAMBADA word right, which would leave accuracy untested, so a sample's last word is replaced by
the model's own greedy continuation where that is a word which tokenizes back to the same tokens (about a
quarter of them): those count as right, the others wrong. The README's "Evaluating with lm-evaluation-harness"
shows the same run from the command line."""

from __future__ import annotations

import json
import math

import pytest

from conftest import ROOT
from NNDF.serving.child_server import OpenAIServer

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is in the test extra: pip install -e '.[test]'")

POSITIONS = 512
TASK = """task: lambada_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{text.split(' ')[:-1]|join(' ')}}}}"
doc_to_target: "{{{{' '+text.split(' ')[-1]}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture(scope="module")
def checkpoint(gpt2_512, tmp_path_factory):
    """(checkpoint folder, dataset file): the model saved as HF does (conftest), and the samples, some ending in
    the model's own greedy word."""
    loaded, saved = gpt2_512
    assert loaded.max_positions == POSITIONS
    folder = tmp_path_factory.mktemp("lm-eval")
    texts = [json.loads(line)["text"] for line in (ROOT / "NNDF" / "data" / "lambada_sample.jsonl").open()]
    samples, greedy = [], 0
    for text in texts:
        if (own := greedy_ending(loaded, text.rsplit(" ", 1)[0])) is not None:
            text, greedy = own, greedy + 1
        samples.append(json.dumps({"text": text}))
    assert 5 <= greedy <= 35
    (folder / "samples.jsonl").write_text("\n".join(samples) + "\n")
    return saved, folder / "samples.jsonl"


def greedy_ending(loaded, context: str) -> str | None:
    """context + the word the model continues it with, greedily, if that text tokenizes as context + those
    tokens (lm-eval reads the continuation as the tokens after the context's)."""
    import torch

    ids = loaded.tokenizer(context)["input_ids"]
    with torch.inference_mode():
        out = loaded.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                    max_new_tokens=4, do_sample=False, pad_token_id=loaded.tokenizer.eos_token_id)
    new = out[0, len(ids):].tolist()
    for n in range(len(new), 0, -1):
        word = loaded.tokenizer.decode(new[:n])
        if word.startswith(" ") and len(word) > 1 and " " not in word[1:] and "\ufffd" not in word \
                and loaded.tokenizer(context + word)["input_ids"] == ids + new[:n]:
            return context + word
    return None


def evaluate(model: str, model_args: dict, tasks_dir) -> dict:
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=["lambada_local"], batch_size=1,
                                      task_manager=TaskManager(include_path=str(tasks_dir)), bootstrap_iters=0,
                                      log_samples=False)
    return {k.split(",")[0]: v for k, v in results["results"]["lambada_local"].items() if "stderr" not in k}


def test_local_completions_through_the_server_scores_as_hf_does(checkpoint, workdir, tmp_path):
    checkpoint, data = checkpoint
    (tmp_path / "lambada_local.yaml").write_text(TASK.format(data=data))
    server = OpenAIServer(("GPT2", "onnxrt", "--use-cache", "--torch-dir", str(checkpoint)), str(workdir.root),
                          tmp_path / "server.log", "--served-model-name", "tiny")
    try:
        server.wait_healthy()
        served = evaluate("local-completions", {"model": "tiny", "base_url": f"{server.base_url}/completions",
                                                "tokenizer": str(checkpoint), "tokenizer_backend": "huggingface",
                                                "max_length": POSITIONS, "num_concurrent": 4}, tmp_path)
    finally:
        assert server.terminate() == 0, server.output()[-2000:]
    reference = evaluate("hf", {"pretrained": str(checkpoint), "device": "cpu", "dtype": "float32"}, tmp_path)
    print(json.dumps({"served": served, "hf": reference}))
    assert set(served) >= {"acc", "perplexity"}
    assert 0.1 <= reference["acc"] <= 0.9            # the greedy endings are right, the true words are not
    assert abs(served["acc"] - reference["acc"]) <= 1e-3
    assert abs(served["perplexity"] - reference["perplexity"]) <= 1e-3 * reference["perplexity"]
    assert math.isfinite(served["perplexity"]) and served["perplexity"] > 1
