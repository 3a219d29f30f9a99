"""accuracy comparable with the original demo's: its samples, its caps, and the same numbers at
any --batch-size / --num-beams and through the KV cache, on every backend (trt on the stand-in)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import run as run_py
from NNDF.actions import accuracy
from NNDF.actions.accuracy import SHIPPED_SAMPLE, load_texts, score_all, score_sample
from NNDF.base.errors import UsageError
from NNDF.cli import parse_args
from NNDF.kinds.makers import make_backends
from NNDF.registry import get_family

ROWS = ["He said “stop” and left.", "It’s `fine`, she said.", "plain text one", "plain text two", "last row"]
TOL = 1e-4


def _demo_draw(rows, num_samples):
    """The demo's own expressions (NNDF/checkpoints.py), here to compare against."""
    index = torch.randint(0, len(rows), (num_samples,), generator=torch.manual_seed(42))
    return [rows[i].replace("“", '"').replace("”", '"').replace("’", "'").replace("‘", "'").replace("`", "'")
            for i in index.tolist()]


def test_dataset_path_samples_are_drawn_as_the_demo_drew_them(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"text": r}) + "\n" for r in ROWS))
    texts = load_texts(path, 12)
    assert texts == _demo_draw(ROWS, 12) and len(texts) == 12   # with replacement, past the 5 rows
    assert not any(c in "".join(texts) for c in "“”’‘`")
    torch.manual_seed(7)
    before = torch.rand(1)
    torch.manual_seed(7)
    load_texts(path, 3)
    assert torch.rand(1) == before   # the caller's global RNG is left alone


class FakeDatasets(types.ModuleType):
    """Stands in for the `datasets` package: records downloads; a saved copy is a folder with the rows."""

    def __init__(self, rows):
        super().__init__("datasets")
        self.rows, self.downloads = rows, []

    def load_dataset(self, name, split):
        self.downloads.append((name, split))

        class Data(dict):
            def save_to_disk(self, path):
                Path(path).mkdir(parents=True)
                (Path(path) / "rows.json").write_text(json.dumps(self["text"]))

        return Data(text=list(self.rows))

    def load_from_disk(self, path):
        return {"text": json.loads((Path(path) / "rows.json").read_text())}


def test_hub_lambada_is_the_validation_split_cached_after_the_first_download(tmp_path, monkeypatch):
    fake = FakeDatasets(ROWS)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.setattr(accuracy, "hub_reachable", lambda: True)
    cache = tmp_path / "w" / "lambada"
    cache.parent.mkdir()
    assert load_texts(None, 6, cache) == _demo_draw(ROWS, 6)
    assert fake.downloads == [("lambada", "validation")] and cache.is_dir()
    monkeypatch.setattr(accuracy, "hub_reachable", lambda: False)   # offline now: the disk copy serves
    assert load_texts(None, 6, cache) == _demo_draw(ROWS, 6)
    assert fake.downloads == [("lambada", "validation")]
    with pytest.raises(UsageError, match="hub is unreachable and no copy is cached; pass --dataset-path"):
        load_texts(None, 6, tmp_path / "elsewhere")


def test_per_sample_log_perplexity_is_capped_at_12():
    seq = np.array([0, 1, 2, 3])
    logits = np.zeros((4, 5), np.float32)
    logits[:, 4] = 100.0   # every true token is ~100 nats away
    scored = score_sample(logits, seq, 2, [1])
    assert scored["target_nll"] == 12.0 and scored["seq_nll"] == 12.0 and scored["hits"][1] == 0.0
    logits[:, :4], logits[:, 4] = 100.0, 0.0   # now four tied tokens: log 4 nats, under the cap
    assert score_sample(logits, seq, 2, [1])["target_nll"] == pytest.approx(np.log(4), abs=1e-5)


def _assert_same_scores(base, other):
    for a, b in zip(base, other, strict=True):
        assert abs(a["target_nll"] - b["target_nll"]) <= TOL and abs(a["seq_nll"] - b["seq_nll"]) <= TOL
        assert a["hits"] == b["hits"]


def _backends(family_name, workdir, names, *flags):
    family = get_family(family_name)
    cfg = parse_args(["accuracy", family_name, *names, "-wd", str(workdir.root), *flags])
    loaded = family.load(cfg)
    return loaded, make_backends(family, loaded, cfg, workdir)


@pytest.mark.parametrize("family_name", ["GPT2", "T5"])
def test_batches_beams_and_the_cache_give_the_batch_1_numbers(workdir, family_name):
    texts = load_texts(SHIPPED_SAMPLE, 7)   # several lengths: batches are padded
    loaded, backends = _backends(family_name, workdir, ("frameworks", "onnxrt"), "-kv")
    top = [1, 5, 10]
    reference = score_all(backends[0], loaded, texts, 4, top)
    assert len({len(loaded.tokenizer(t)["input_ids"]) for t in texts}) > 1
    for backend in backends:
        for settings in ({"batch_size": 3}, {"batch_size": 3, "use_cache": True}, {"use_cache": True},
                         {"batch_size": 2, "num_beams": 2, "use_cache": True}):
            _assert_same_scores(reference, score_all(backend, loaded, texts, 4, top, **settings))


@pytest.mark.parametrize("family_name", ["GPT2", "T5"])
def test_trt_scores_batches_beams_and_cache_like_frameworks(standin, workdir, family_name):
    """The engine profile holds exactly batch x beams rows: accuracy must feed that many."""
    texts = load_texts(SHIPPED_SAMPLE, 5)
    loaded, (fw, trt) = _backends(family_name, workdir, ("frameworks", "trt"), "-kv", "-b", "2", "-nb", "2")
    reference = score_all(fw, loaded, texts, 3, [1, 10])
    _assert_same_scores(reference, score_all(trt, loaded, texts, 3, [1, 10], batch_size=2, num_beams=2,
                                             use_cache=True))
    _assert_same_scores(reference, score_all(trt, loaded, texts, 3, [1, 10], batch_size=2, num_beams=2))
    assert standin._errors == []


# gpt2-tiny's onnxrt decoder is written from the weights with an in-place cache (InPlaceCacheDecoder, its
# state counts `fed` tokens); gpt-neo-tiny's is the traced one (DecoderOnlySteps, `seen` tokens)
@pytest.mark.parametrize("variant,step_model", [("gpt2-tiny", "InPlaceCacheDecoder"), ("gpt-neo-tiny", "DecoderOnlySteps")])
def test_the_cached_decoder_is_what_is_scored(workdir, monkeypatch, variant, step_model):
    """With --use-cache the scores come from one-token steps on the cache, not a full pass."""
    loaded, (ort,) = _backends("GPT2", workdir, ("onnxrt",), "-kv", "--variant", variant)
    assert type(ort.steps).__name__ == step_model
    steps = []
    real = ort.steps.advance

    def advance(state, ids, *args, **kwargs):
        steps.append(ids.shape[1] - (state.seen if hasattr(state, "seen") else state.fed))
        return real(state, ids, *args, **kwargs)

    monkeypatch.setattr(ort.steps, "advance", advance)
    monkeypatch.setattr(ort, "logits", lambda *a, **k: pytest.fail("the full pass was used"))
    text = load_texts(SHIPPED_SAMPLE, 1)
    score_all(ort, loaded, text, 4, [1], use_cache=True)
    assert steps[1:] == [1, 1, 1, 1] and steps[0] > 1   # prefill, then one step per target


def test_accuracy_action_with_batch_beams_and_cache(capsys, workdir, tmp_path):
    out_file = tmp_path / "a.json"
    common = ("accuracy", "GPT2", "frameworks", "onnxrt", "-wd", str(workdir.root), "--dataset-path",
              str(SHIPPED_SAMPLE), "--num-samples", "6")
    assert run_py.main([*common, "-o", str(out_file)]) == 0
    single = json.loads(out_file.read_text())["results"]
    assert run_py.main([*common, "-kv", "-b", "4", "-nb", "2", "-o", str(out_file)]) == 0
    data = json.loads(out_file.read_text())
    assert (data["batch_size"], data["num_beams"], data["use_cache"]) == (4, 2, True)
    for name, r in data["results"].items():
        assert r["top_n"] == single[name]["top_n"] and r["num_samples"] == 6
        for key in ("token_perplexity", "seq_perplexity"):
            assert np.log(r[key]) == pytest.approx(np.log(single[name][key]), abs=TOL)
    capsys.readouterr()
