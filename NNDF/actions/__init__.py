"""The five run.py actions. Each takes the run config, the loaded model and the
backends, prints a human-readable summary and returns a JSON-ready dict."""

from __future__ import annotations


def perform(cfg, family, loaded, backends) -> dict:
    """Run cfg.action; the result is what `--save-output-fpath` writes (run.py and NNDF.api share it)."""
    from NNDF.actions import accuracy, benchmark, chat, run_examples

    if not loaded.generates:   # encoders answer in one pass: their own action paths
        from NNDF.actions import encoder

        return {"family": family.name, "variant": loaded.variant, **encoder.perform(cfg, family, loaded, backends)}
    if cfg.action == "accuracy":
        result = accuracy.run(cfg, loaded, backends)
    elif cfg.action == "benchmark":
        result = benchmark.run(cfg, loaded, backends)
    elif cfg.action == "chat":
        result = chat.run(cfg, loaded, backends)
    elif cfg.action == "run":
        result = run_examples.run(cfg, loaded, backends, family)
    else:
        result = run_examples.compare(cfg, loaded, backends, family)
    return {"family": family.name, "variant": loaded.variant, **result}
