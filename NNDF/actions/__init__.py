"""The actions of run.py, in one table: what each reads of the flags (its ActionRules, which
RunConfig building checks) and the class that performs it for generating models and for encoders.

Classes are named "module:Class" and imported when an action runs, so parsing flags (and refusing
bad ones) stays fast: nothing here imports torch. This table is the only place that tells actions
apart by name; everything else asks the action object.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from NNDF.base.config import ActionRules, RunConfig
from NNDF.base.errors import UsageError


@dataclass(frozen=True)
class ActionEntry:
    rules: ActionRules
    text: str                    # "module:Class" for generating models (and actions without a model)
    encoder: str | None = None   # "module:Class" for encoder families; None: encoders are refused

    def action_for(self, generates: bool):
        name = self.text if generates or self.encoder is None else self.encoder
        module, cls = name.split(":")
        return getattr(importlib.import_module(module), cls)()


ACTIONS: dict[str, ActionEntry] = {
    "accuracy": ActionEntry(ActionRules("accuracy", default_new_tokens="tokens_to_generate", fp32_reference=True),
                            "NNDF.actions.accuracy:Accuracy", "NNDF.actions.encoder:EncoderAccuracy"),
    "benchmark": ActionEntry(ActionRules("benchmark", default_new_tokens=64, exact_new_tokens=True,
                                         own_flags=("n_positions", "batch_sweep")),
                             "NNDF.actions.benchmark:Benchmark", "NNDF.actions.encoder:EncoderBenchmark"),
    "chat": ActionEntry(ActionRules("chat", own_flags=("compare", "chat_template")),
                        "NNDF.actions.chat:Chat", "NNDF.actions.encoder:EncoderChat"),
    "run": ActionEntry(ActionRules("run", own_flags=("checkpoint",)),
                       "NNDF.actions.run_examples:RunExamples", "NNDF.actions.encoder:EncoderRun"),
    "compare": ActionEntry(ActionRules("compare", fp32_reference=True, own_flags=("checkpoint", "compare")),
                           "NNDF.actions.run_examples:Compare", "NNDF.actions.encoder:EncoderCompare"),
    "list": ActionEntry(ActionRules("list", needs_family=False, backends="none"), "NNDF.actions.listing:ListFamilies"),
    "env": ActionEntry(ActionRules("env", needs_family=False, backends="none"), "NNDF.actions.environment:Environment"),
    "serve": ActionEntry(ActionRules("serve", backends="one", own_flags=("chat_template",)), "NNDF.actions.serving:Serve"),
    "export-triton": ActionEntry(ActionRules("export-triton", backends="by --backend"),
                                 "NNDF.actions.serving:ExportTriton"),
}

RULES = {name: entry.rules for name, entry in ACTIONS.items()}


def action_for(name: str, family=None):
    """The action object for `name`, for `family`'s kind of model (None: actions without a model)."""
    entry = ACTIONS[name]
    if family is not None and not family.generates and entry.encoder is None:
        raise UsageError(f"{name} serves generating models; {family.name} is an encoder family",
                         "use run, compare, accuracy, benchmark or chat")
    return entry.action_for(family is None or family.generates)


def perform(cfg: RunConfig) -> dict:
    """The whole of `python run.py ...` on a validated config: the result its JSON file holds."""
    if not ACTIONS[cfg.action].rules.needs_family:
        return action_for(cfg.action).perform(cfg, None)
    from NNDF.actions.flow import run_on_model
    from NNDF.registry import resolve

    family, cfg = resolve(cfg)
    action = action_for(cfg.action, family)
    result = action.perform(cfg, family)
    return run_on_model(action, cfg, family) if result is None else result
