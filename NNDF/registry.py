"""The families this toolkit has: a family's name on the command line -> its ModelFamily (imported on
demand, by the "module:attribute" names below), and a checkpoint's model type -> the family whose
graphs fit it. It stands above the family folders, which import nothing from here."""

from __future__ import annotations

import importlib
from dataclasses import replace
from typing import TYPE_CHECKING

from NNDF.base.config import RunConfig
from NNDF.base.errors import UsageError
from NNDF.models.family import WrongModelType

if TYPE_CHECKING:
    from NNDF.models.family import LoadedModel, ModelFamily

FAMILIES = {
    "GPT2": "GPT2.GPT2ModelConfig:GPT2_FAMILY",   # also GPT-Neo, GPT-J, GPT-NeoX, Cerebras-GPT
    "OPT": "OPT.OPTModelConfig:OPT_FAMILY",
    "BLOOM": "BLOOM.BLOOMModelConfig:BLOOM_FAMILY",
    "LLAMA": "LLAMA.LLAMAModelConfig:LLAMA_FAMILY",   # also Mistral, Qwen2, TinyLlama, SmolLM2
    "T5": "T5.T5ModelConfig:T5_FAMILY",          # also Flan-T5
    "BART": "BART.BARTModelConfig:BART_FAMILY",  # also mBART
    "BLIP": "BLIP.BLIPModelConfig:BLIP_FAMILY",  # image captioning
    "BERT": "BERT.BERTModelConfig:BERT_FAMILY",  # also DistilBERT: classification, QA, NER, embeddings
    "VIT": "VIT.VITModelConfig:VIT_FAMILY",      # image classification
}


def get_family(name: str) -> ModelFamily:
    match = next((k for k in FAMILIES if k.lower() == name.lower()), None)
    if match is None:
        raise UsageError(f"unknown model family '{name}'", f"choose one of: {', '.join(FAMILIES)}")
    module, attr = FAMILIES[match].split(":")
    return getattr(importlib.import_module(module), attr)


def family_for_model_type(model_type: str) -> str | None:
    """The family whose graphs fit an HF config.model_type, if any."""
    return next((name for name in FAMILIES if model_type in get_family(name).model_types), None)


def resolve(cfg: RunConfig) -> tuple[ModelFamily, RunConfig]:
    """The family, and cfg with its canonical family name and a concrete variant
    (the family's default tiny one, or the --torch-dir folder's name). A variant the
    family does not list is taken as a hub model id when the model is loaded."""
    family = get_family(cfg.family)
    variant = cfg.variant or (cfg.torch_dir.name if cfg.torch_dir else family.tiny_variant)
    return family, replace(cfg, family=family.name, variant=variant)


def load(family: ModelFamily, cfg: RunConfig) -> LoadedModel:
    """family.load(cfg); a checkpoint of an architecture the family does not serve is refused in one
    line naming the family that does, if there is one."""
    try:
        return family.load(cfg)
    except WrongModelType as e:
        other = family_for_model_type(e.model_type)
        raise UsageError(e.problem, f"run it as `{other}`" if other else e.fix) from None
