"""benchmarks/serve_bound.py on the tiny GPT2: the in-process measurement behind the README's ceiling for
continuous batching counts what it claims to."""

from __future__ import annotations

import importlib.util

from conftest import ROOT


def test_the_bound_script_times_every_prefill_once_and_packs_full_steps(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("serve_bound", ROOT / "benchmarks" / "serve_bound.py")
    bound = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bound)
    out = tmp_path / "bound.json"
    result = bound.main(["--variant", "gpt2-tiny", "--clients", "4", "--requests-per-client", "2", "--sequential", "2",
                         "--rounds", "1", "--working-dir", str(tmp_path / "w"), "--output", str(out)])
    from openai_serve_speed import workload

    from NNDF.cli import parse_args
    from NNDF.registry import get_family

    tokenizer = get_family("GPT2").load(parse_args(["run", "GPT2", "--variant", "gpt2-tiny"])).tokenizer
    prompts = [len(tokenizer(text)["input_ids"]) for text, _, _ in workload(8, 0, "gpt2-tiny")]
    (one,), (batched,) = result["rounds"]["one_at_a_time"], result["rounds"]["batched"]
    assert one["prefilled_tokens"] == sum(prompts[:2]) and batched["prefilled_tokens"] == sum(prompts)
    assert set(batched["median_step_ms_by_rows"]) <= {1, 2, 3, 4} and 4 in batched["median_step_ms_by_rows"]
    assert set(one["median_step_ms_by_rows"]) == {1}                     # one at a time never batches
    assert batched["steps"] >= max(batched["tokens"] // 4, 1)
    assert result["packed_ceiling_tokens_per_s"] > 0 and out.is_file()
    assert set(result["lm_head_matmul_gflops_by_rows"]) == {1, 16, 256}
