"""Checks made before any training or export, so a mistake costs a second, not an export.

`check_output_path` runs with the flags; `check_inputs` before the model is
loaded (the data files a run will read: dataset, checkpoint examples);
`check_loaded` after loading and before any backend is built (prompt lengths
against the model's positions, and the run's peak memory).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from NNDF import memory
from NNDF.config import RunConfig
from NNDF.errors import UsageError

if TYPE_CHECKING:   # the flags are checked before torch is imported
    from NNDF.family import LoadedModel, ModelFamily


def check_output_path(path: Path | None) -> None:
    """--save-output-fpath must be a file we can create or replace, checked now, not after the run."""
    if path is None:
        return
    if not str(path).strip():
        raise UsageError("--save-output-fpath is empty", "name a JSON file, e.g. --save-output-fpath result.json")
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--save-output-fpath {path} is a directory", "name a file inside it")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:   # save_json creates the missing folders
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--save-output-fpath {path} cannot be created: {existing} is a file, not a folder",
                         "choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".probe-writable-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UsageError(f"--save-output-fpath {path} cannot be written: {existing} is not writable ({e.strerror})",
                         "choose a writable path") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"--save-output-fpath {path} exists and is not writable", "choose another path")


def _variant_name(cfg: RunConfig, family: ModelFamily) -> str:
    listed = None if cfg.torch_dir is not None else family.find_variant(cfg.variant)
    return cfg.variant if listed is None else listed.name   # unlisted: a hub model id


def check_inputs(cfg: RunConfig, family: ModelFamily) -> None:
    """Read and validate the data files the action will read."""
    if not family.generates:
        from NNDF.actions import encoder

        return encoder.check_inputs(cfg, family)
    if cfg.batch_sweep:
        raise UsageError(f"--batch-sweep times encoder families; {family.name} generates",
                         "run one benchmark per --batch-size")
    if cfg.action == "accuracy":
        from NNDF.actions.accuracy import lambada_cache, load_texts

        load_texts(cfg.dataset_path, cfg.num_samples, lambada_cache(cfg))
    elif cfg.action in ("run", "compare"):
        from NNDF.actions.run_examples import all_prompts

        all_prompts(cfg, family, _variant_name(cfg, family))


def check_loaded(cfg: RunConfig, family: ModelFamily, loaded: LoadedModel) -> memory.MemoryEstimate:
    """Prompt lengths and peak memory; returns the memory estimate (for --info)."""
    if not loaded.generates:
        from NNDF.actions import encoder

        return encoder.check_loaded(cfg, family, loaded)
    est = run_memory(cfg, family, loaded)
    memory.check(est, cfg)
    if cfg.action == "benchmark":
        loaded.random_prompts(cfg)
    elif cfg.action in ("run", "compare"):
        from NNDF.actions.run_examples import all_prompts

        for batch in all_prompts(cfg, family, loaded.variant):   # each example is one batch
            loaded.encode_prompts(batch, cfg.use_mask, cfg.generation.max_new_tokens)
    elif cfg.action == "accuracy":
        from NNDF.actions.accuracy import lambada_cache, load_texts, teacher_forced_sequence

        for text in load_texts(cfg.dataset_path, cfg.num_samples, lambada_cache(cfg)):
            teacher_forced_sequence(loaded, text, cfg.tokens_to_generate)
    return est


def run_memory(cfg: RunConfig, family: ModelFamily, loaded: LoadedModel) -> memory.MemoryEstimate:
    if not loaded.generates:
        from NNDF.actions import encoder

        return encoder.estimate(cfg, loaded)
    prompt_len = None
    if cfg.action == "benchmark":
        prompt_len = cfg.input_seq_len
    elif cfg.action in ("run", "compare"):
        from NNDF.actions.run_examples import all_prompts

        prompt_len = max(len(loaded.tokenizer(p)["input_ids"]) for batch in all_prompts(cfg, family, loaded.variant)
                         for p in batch)
    return memory.estimate(cfg, loaded, prompt_len)
