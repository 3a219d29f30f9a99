"""An image-to-text family (BLIP, ...): its loaded models are ImageTextModels (model.py) with the
caption token ids, and its backends are this kind's (backends.py)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from NNDF.base.config import RunConfig
from NNDF.kinds.image_to_text.graphs import Vision2SeqLayout
from NNDF.kinds.image_to_text.model import ImageTextModel
from NNDF.models.family import LoadedModel, ModelFamily, Variant


@dataclass
class Vision2SeqFamily(ModelFamily):
    """A ModelFamily whose loaded models are ImageTextModels with the caption token ids."""

    kind = "image_to_text"
    reads_images = True

    def load(self, cfg: RunConfig) -> ImageTextModel:
        loaded = super().load(cfg)
        loaded.check_image_flag(cfg)
        return loaded

    def _finish(self, variant: Variant, model, tokenizer, key: dict) -> ImageTextModel:
        loaded = super()._finish(variant, model, tokenizer, key)
        layout: Vision2SeqLayout = self.layouts[loaded.arch]
        ids = layout.token_ids(model.config)
        defaults = {**loaded.generation_defaults, "eos_token_id": ids["eos"], "pad_token_id": ids["pad"],
                    "decoder_start_token_id": ids["bos"]}
        base = {f.name: getattr(loaded, f.name) for f in fields(LoadedModel)}
        return ImageTextModel(**{**base, "generation_defaults": defaults}, image_settings=layout.image_settings(model.config),
                              bos_id=ids["bos"], image_dirs=(self.folder,),
                              caption_samples=self._captions())

    def _captions(self) -> Path | None:
        shipped = self.folder / "data" / "captions.jsonl"
        return shipped if shipped.is_file() else None
