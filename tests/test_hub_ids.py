"""Any HuggingFace model id of a supported architecture, through a mocked hub.

The mock is a real HF cache folder (models--ORG--NAME/refs/main -> snapshots/<commit>/)
holding models saved by save_pretrained, with the hub offline: transformers resolves the
ids exactly as it would after a download.
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import call, one_line_error
from NNDF.models import hub
from NNDF.registry import get_family

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _publish(cache, repo_id: str, model, tokenizer) -> None:
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    model.save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)


@pytest.fixture()
def mocked_hub(tmp_path, monkeypatch, gpt2_tiny, workdir):
    cache = tmp_path / "hf-cache"
    _publish(cache, "some-org/a-gpt2-finetune", gpt2_tiny.model, gpt2_tiny.tokenizer)
    _publish(cache, "distilgpt2", gpt2_tiny.model, gpt2_tiny.tokenizer)
    from conftest import make_cfg
    t5 = get_family("T5").load(make_cfg(workdir, "--variant", "t5-tiny"))
    _publish(cache, "some-org/a-t5", t5.model, t5.tokenizer)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    hub.hub_reachable.cache_clear()
    yield cache
    hub.hub_reachable.cache_clear()




@pytest.mark.parametrize("model_id", ["some-org/a-gpt2-finetune", "distilgpt2"])
def test_unlisted_id_of_a_fitting_architecture_loads_and_runs(capsys, tmp_path, mocked_hub, gpt2_tiny, model_id):
    out_file = tmp_path / "r.json"
    wd = tmp_path / "w"
    code, _, err = call(capsys, "run", "GPT2", "frameworks", "onnxrt", "--variant", model_id, "-kv", "-wd", str(wd),
                        "--iterations", "1", "--output-seq-len", "6", "-o", str(out_file))
    assert code == 0, err
    data = json.loads(out_file.read_text())
    assert data["variant"] == model_id
    fw, ort = data["results"]["frameworks"]["examples"], data["results"]["onnxrt"]["examples"]
    assert fw and all(fw[k]["output"] == ort[k]["output"] for k in fw)
    assert list(wd.glob(f"GPT2/{model_id.replace('/', '--')}/onnx/*/model.onnx"))
    # the same weights as gpt2-tiny, so the same tokens
    reference = get_family("GPT2").load(run_py_cfg(tmp_path, model_id))
    assert reference.source_key["hub_id"] == model_id
    assert all(
        (a == b).all() for a, b in zip(reference.model.state_dict().values(), gpt2_tiny.model.state_dict().values()))


def run_py_cfg(tmp_path, variant):
    from NNDF.cli import parse_args
    return parse_args(["run", "GPT2", "--variant", variant, "-wd", str(tmp_path / "w")])


def test_unlisted_id_with_random_weights_uses_its_config(capsys, tmp_path, mocked_hub):
    from NNDF.cli import parse_args
    cfg = parse_args(["run", "GPT2", "--variant", "distilgpt2", "--random-weights", "-wd", str(tmp_path)])
    loaded = get_family("GPT2").load(cfg)
    assert loaded.source_key["weights"] == "random" and loaded.model.config.n_embd == 64


def test_an_id_of_another_architecture_names_the_family_that_fits(capsys, tmp_path, mocked_hub):
    one_line_error(capsys, "run", "GPT2", "--variant", "some-org/a-t5", "-wd", str(tmp_path),
        match="'some-org/a-t5' is a 't5' model, not one of the GPT2 family's types")
    line = one_line_error(capsys, "run", "GPT2", "--torch-dir",
               str(next(mocked_hub.glob("models--some-org--a-t5/snapshots/*"))), "-wd", str(tmp_path),
               match="is a 't5' model")
    assert "run it as `T5`" in line


def test_offline_miss_is_one_fast_line_naming_the_offline_options(capsys, tmp_path, mocked_hub):
    start = time.perf_counter()
    line = one_line_error(capsys, "run", "GPT2", "--variant", "some-org/not-there", "-wd", str(tmp_path),
               match="unknown GPT2 variant 'some-org/not-there'")
    assert "--torch-dir" in line and "--random-weights" in line and "not in the local HF cache" in line
    assert time.perf_counter() - start < 10   # no retry loop against an unreachable hub


def test_unreachable_hub_is_detected_without_waiting(monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "https://127.0.0.1:9")  # nothing listens there
    hub.hub_reachable.cache_clear()
    try:
        start = time.perf_counter()
        assert hub.hub_reachable() is False
        assert time.perf_counter() - start < 5
    finally:
        hub.hub_reachable.cache_clear()
