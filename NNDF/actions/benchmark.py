"""Latency with random prompts of a fixed length and a forced output length."""

from __future__ import annotations

import sys
from dataclasses import asdict, replace

import numpy as np

from NNDF.actions.action import Action
from NNDF.actions.reporting import identity, megabytes, settings_dict, table
from NNDF.base.config import RunConfig
from NNDF.base.errors import UsageError
from NNDF.base.progress import status
from NNDF.base.timing import measure, percentile
from NNDF.models.family import LoadedModel
from NNDF.runtime.backends import Backend
from NNDF.runtime.generation import GenerationOutput
from NNDF.runtime.memory import Workload
from NNDF.runtime.peak_memory import PeakMemory


def summarize(latencies: list[float], outputs: list[GenerationOutput], cfg: RunConfig, encoder_s: list[float]) -> dict:
    pct = cfg.timing.percentiles
    steps = [t for o in outputs for t in o.decode_step_s]
    prefills = [o.prefill_s for o in outputs]
    new_tokens = outputs[0].tokens.shape[1] if outputs else 0
    per_pct = {}
    for p in pct:
        full = percentile(latencies, p)
        per_pct[str(p)] = {"full_latency_s": full, "decoder_latency_s": percentile(steps, p),
                           "prefill_latency_s": percentile(prefills, p),
                           "tokens_per_second": cfg.batch_size * new_tokens / full if full > 0 else float("nan")}
        if encoder_s:
            per_pct[str(p)]["encoder_latency_s"] = percentile(encoder_s, p)
    first = per_pct[str(pct[0])]
    return {**first, "percentile": pct[0], "percentiles": per_pct, "new_tokens": new_tokens,
            "iterations": len(latencies)}


class Benchmark(Action):
    """`benchmark` for generating models: seeded random prompts of --input-seq-len, exactly
    --output-seq-len new tokens, latency and tokens/s per backend."""

    def check_inputs(self, cfg: RunConfig, family) -> None:
        if cfg.batch_sweep:
            raise UsageError(f"--batch-sweep times encoder families; {family.name} generates",
                             "run one benchmark per --batch-size")

    def fit(self, cfg: RunConfig, family, loaded: LoadedModel) -> RunConfig:
        """The defaults (128 prompt + 64 new tokens, the original demo's) for a model with room for
        them; for one with fewer positions (the tiny variants have 128, blip-tiny's text 64), the
        longest lengths that fit, changing only the flags left out, so that the bare
        `benchmark FAMILY BACKEND` works on every family's default variant. The run says so."""
        given_new = "output_seq_len" not in cfg.default_lengths
        given_input = "input_seq_len" not in cfg.default_lengths
        if given_new and given_input:
            return cfg
        g = cfg.generation
        input_len, new = loaded.benchmark_lengths(cfg.input_seq_len, g.max_new_tokens, given_input, given_new)
        if (input_len, new) == (cfg.input_seq_len, g.max_new_tokens):
            return cfg
        changed = [f"--{flag} {value}" for flag, value, was in (("input-seq-len", input_len, cfg.input_seq_len),
                                                                 ("output-seq-len", new, g.max_new_tokens)) if value != was]
        print(f"note: {loaded.variant} has {loaded.max_positions} positions, so this benchmark uses "
              f"{' '.join(changed)} (give the flags to choose)", file=sys.stderr)
        generation = replace(g, max_new_tokens=new, min_new_tokens=new)   # benchmark generates exactly that many
        return replace(cfg, input_seq_len=input_len, generation=generation)

    def workload(self, cfg: RunConfig, family, loaded) -> Workload:
        return Workload(cfg.batch_size * cfg.generation.num_beams, cfg.input_seq_len, cfg.generation.max_new_tokens)

    def check_loaded(self, cfg: RunConfig, family, loaded) -> None:
        super().check_loaded(cfg, family, loaded)
        loaded.random_prompts(cfg)

    def run(self, cfg: RunConfig, family, loaded: LoadedModel, backends: list[Backend]) -> dict:
        ids, mask = loaded.random_prompts(cfg)
        results, tokens = {}, {}
        for backend in backends:
            with status(f"benchmarking {backend.name}"), PeakMemory() as peak:
                latencies, outputs = measure(lambda: backend.generate(ids, mask, cfg.generation), cfg.timing)
            encoder_s = [o.start_s for o in outputs] if loaded.times_encoder else []
            results[backend.name] = {**identity(backend), **summarize(latencies, outputs, cfg, encoder_s),
                                     **peak.result(backend.device)}
            tokens[backend.name] = outputs[-1].tokens
        reference = next(iter(tokens.values()))
        for name, t in tokens.items():
            results[name]["same_tokens_as_" + backends[0].name] = bool(np.array_equal(t, reference))
            results[name]["tokens"] = t.tolist()   # so runs in separate processes can be compared too
        input_len = mask.shape[1]   # --input-seq-len, or the family's own prompt (an image and the start token)
        return {"action": "benchmark", "settings": {**settings_dict(cfg), "input_seq_len": input_len,
                                                    "output_seq_len": cfg.generation.max_new_tokens,
                                                    "timing": asdict(cfg.timing)},
                "results": results}

    def report(self, cfg: RunConfig, loaded, result: dict, backends: list[Backend]) -> None:
        results, first = result["results"], backends[0].name
        p = cfg.timing.percentiles[0]
        print(f"benchmark: batch {cfg.batch_size}, {result['settings']['input_seq_len']} input tokens, "
              f"{cfg.generation.max_new_tokens} new tokens, cache {'on' if cfg.generation.use_cache else 'off'}, "
              f"beams {cfg.generation.num_beams}, p{p} over {cfg.timing.iterations}+ iterations")
        has_encoder = any("encoder_latency_s" in r for r in results.values())
        headers = ["backend", "device", "precision", "full (s)", "decoder step (ms)", "prefill (ms)", "tokens/s",
                   "peak host (MB)", "peak GPU (MB)", "same tokens"]
        if has_encoder:
            headers.insert(4, "encoder (ms)")
        rows = []
        for name, r in results.items():
            row = [name, r["device"], r["precision"], f"{r['full_latency_s']:.4f}", f"{r['decoder_latency_s'] * 1e3:.2f}",
                   f"{r['prefill_latency_s'] * 1e3:.2f}", f"{r['tokens_per_second']:.1f}",
                   megabytes(r["peak_host_memory_mb"]), megabytes(r["peak_gpu_memory_mb"]),
                   "yes" if r["same_tokens_as_" + first] else "NO"]
            if has_encoder:
                row.insert(4, f"{r.get('encoder_latency_s', float('nan')) * 1e3:.2f}")
            rows.append(row)
        print(table(headers, rows))
        if cfg.generation.do_sample and "frameworks" in results and len(results) > 1:
            print("note: frameworks samples with torch's generator, so its tokens differ; onnxrt and trt share "
                  "one seeded sampler and agree with each other")
        if len(results) > 1:
            base = results[first]["full_latency_s"]
            for name, r in list(results.items())[1:]:
                print(f"{name} is {base / r['full_latency_s']:.2f}x {first} end to end")
