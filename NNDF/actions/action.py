"""What every action is: the same small interface, so run.py, the Python API and the actions table
treat them alike.

    check_inputs(cfg, family)        before loading: the files the action will read parse
    check_shape(cfg, family, shape)  before loading: the model's size (from its config) fits in memory
    fit(cfg, family, loaded) -> cfg  after loading: defaults the model cannot hold, made to fit it
    workload(cfg, family, loaded)    what it feeds the model at most (for the memory estimate)
    check_loaded(cfg, family, loaded) after loading, before any export: its inputs fit the model
    keeps_torch_model(cfg, loaded)   after the backends exist: whether the torch weights are still read
    run(cfg, family, loaded, backends) -> result dict (what --save-output-fpath writes)
    report(cfg, loaded, result, backends)  print it for a person

A run loads the model, checks, opens the backends and answers (NNDF/actions/flow.py). Actions
that load no model (list, env) or own their whole flow (serve, export-triton) override `perform`.
"""

from __future__ import annotations

from NNDF.base.config import RunConfig
from NNDF.runtime import memory
from NNDF.runtime.memory import Workload


class Action:
    # ------------------------------------------------------------------ checks
    def check_inputs(self, cfg: RunConfig, family) -> None:
        """Before loading: the data files this action reads, read and checked."""

    def fit(self, cfg: RunConfig, family, loaded) -> RunConfig:
        """After loading: cfg with the defaults this model cannot hold made to fit it (flags the user
        gave are never changed; a given value that does not fit is check_loaded's one-line error)."""
        return cfg

    def workload(self, cfg: RunConfig, family, loaded) -> Workload:
        """The most this action feeds the model at once."""
        return Workload(cfg.batch_size * cfg.generation.num_beams, None, cfg.generation.max_new_tokens)

    def memory(self, cfg: RunConfig, family, loaded) -> memory.MemoryEstimate:
        return memory.estimate(cfg, loaded, self.workload(cfg, family, loaded), family,
                               family.onnxrt_from_weights(loaded.model.config, cfg))

    def check_shape(self, cfg: RunConfig, family, shape: memory.ModelShape) -> None:
        """Before loading: every stage the model's size decides (load, export, rewrites, sessions) fits
        in the memory available, or the run ends here, in one line, having read no weight."""
        estimate = memory.estimate(cfg, shape, None, family, family.onnxrt_from_weights(shape.config, cfg))
        memory.check(estimate, cfg, loaded=shape, family=family)

    def check_loaded(self, cfg: RunConfig, family, loaded) -> None:
        """After loading, before any export: inputs fit the model and the run fits in memory (beyond the
        model, which is already held)."""
        resident = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
        memory.check(self.memory(cfg, family, loaded), cfg, resident=resident, loaded=loaded, family=family)

    def keeps_torch_model(self, cfg: RunConfig, loaded) -> bool:
        """Whether the run still reads the torch model's weights once its backends exist (otherwise
        they are released): where frameworks is one of its backends."""
        return "frameworks" in cfg.backends

    # ------------------------------------------------------------------ the action itself
    def run(self, cfg: RunConfig, family, loaded, backends: list) -> dict:
        raise NotImplementedError

    def report(self, cfg: RunConfig, loaded, result: dict, backends: list) -> None:
        """Print the result for a person (some actions print as they go and have nothing left)."""

    def answer(self, cfg: RunConfig, family, loaded, backends: list) -> dict:
        """run, report, and the result as JSON names it: family and variant first."""
        result = self.run(cfg, family, loaded, backends)
        self.report(cfg, loaded, result, backends)
        return {"family": family.name, "variant": loaded.variant, **result}

    def perform(self, cfg: RunConfig, family) -> dict:
        """A whole run of this action; None: the usual one for a model (NNDF/actions/flow.py)."""
        return None
