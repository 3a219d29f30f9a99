"""`list`: the families, their variants, and which of them run without the hub.

The demo's `list` named its networks; this also says, per variant, where its
weights come from, so an offline user knows what will run before trying it.
"""

from __future__ import annotations

from NNDF.actions.action import Action
from NNDF.actions.reporting import save_json, table
from NNDF.base.config import RunConfig
from NNDF.base.errors import UsageError
from NNDF.models.family import ModelFamily, Variant
from NNDF.registry import FAMILIES, get_family


def availability(family: ModelFamily, variant: Variant) -> tuple[str, bool]:
    """(how a variant can run here, whether that works offline): always (tiny), from the local
    HF cache, with --random-weights from a shipped config, or only with the hub."""
    if variant.build_tiny is not None:
        return "offline (tiny, built here)", True
    cached = bool(variant.hub_id) and _in_hf_cache(variant.hub_id)
    where = "hub, in the local HF cache" if cached else "hub"
    shipped = bool(variant.config_file) and (family.config_dir() / variant.config_file).is_file()
    return (f"{where}; offline with --random-weights" if shipped else f"{where} only"), cached or shipped


def _in_hf_cache(hub_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)
    except Exception:  # a malformed cache entry means "not usable offline", nothing worse
        return False


def list_families(family_name: str) -> dict:
    """Print each family's variants and where they run from; the `list` result."""
    names = [get_family(family_name).name] if family_name else list(FAMILIES)
    result = {}
    for name in names:
        family = get_family(name)
        rows, offline = [], []
        for v in family.variants:
            runs, works_offline = availability(family, v)
            rows.append([v.name, v.hub_id or "-", runs])
            offline.append(works_offline)
        print(f"{name}" + (f" (also any hub model of type {', '.join(family.model_types)})" if family.model_types else ""))
        print(table(["variant", "hub id", "runs"], rows))
        print()
        result[name] = {"model_types": list(family.model_types),
                        "variants": [{"variant": r[0], "hub_id": None if r[1] == "-" else r[1], "runs": r[2],
                                      "offline": o} for r, o in zip(rows, offline)]}
    if not result:
        raise UsageError("no families registered")
    return {"action": "list", "families": result}


class ListFamilies(Action):
    """`list [FAMILY]`: nothing to load."""

    def perform(self, cfg: RunConfig, family) -> dict:
        result = list_families(cfg.family)
        save_json(cfg.save_output_fpath, result)
        return result
