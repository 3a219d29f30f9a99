"""BLIP image captioning: variants, and where BLIP differs from any image-to-text model.

BlipForConditionalGeneration = a ViT (`vision_model`) + a BERT-like causal text
decoder with cross-attention (`text_decoder`, BlipTextLMHeadModel), which caches
through transformers' EncoderDecoderCache like the Seq2Seq decoders do. Captions
start with [DEC] (text_config.bos_token_id) and end at [SEP] (sep_token_id, not
eos_token_id). Images are resized to image_size with bicubic resampling and
normalised with the OpenAI CLIP mean/std (BlipImageProcessor).
"""

import torch
from transformers import AutoModelForImageTextToText

from NNDF.kinds.image_to_text.family import Vision2SeqFamily
from NNDF.kinds.image_to_text.graphs import Vision2SeqLayout
from NNDF.models.family import Variant
from NNDF.models.images import ImageSettings

from BLIP.tiny import build_tiny, wordpiece_tokenizer

HUB_VARIANTS = ("Salesforce/blip-image-captioning-base", "Salesforce/blip-image-captioning-large")


def _hf_generate(model, pixel_values, input_ids, attention_mask, **kwargs) -> torch.Tensor:
    """BLIP's generate, given our decoder prompt (bos + prefix, left-padded). It expects its
    processor's "[CLS] prefix [SEP]": it overwrites column 0 with bos and drops the last column,
    so give it a last column to drop. Returns bos, prefix and the new tokens."""
    last = torch.full_like(input_ids[:, :1], model.config.text_config.sep_token_id)
    return model.generate(pixel_values=pixel_values, input_ids=torch.cat([input_ids, last], dim=1),
                          attention_mask=torch.cat([attention_mask, torch.ones_like(last)], dim=1), **kwargs)


def _image_settings(config) -> ImageSettings:
    size = config.vision_config.image_size
    return ImageSettings(size, size)   # bicubic, rescale 1/255, OpenAI CLIP mean/std


BLIP_LAYOUT = Vision2SeqLayout(
    vision_model=lambda model: model.vision_model,
    text_decoder=lambda model: model.text_decoder,
    vision_config=lambda config: config.vision_config,
    text_config=lambda config: config.text_config,
    image_tokens=lambda vision: (vision.image_size // vision.patch_size) ** 2 + 1,   # patches + class token
    image_settings=_image_settings,
    token_ids=lambda config: {"bos": config.text_config.bos_token_id, "eos": config.text_config.sep_token_id,
                              "pad": config.text_config.pad_token_id},
    hf_generate=_hf_generate,
)

BLIP_FAMILY = Vision2SeqFamily(
    name="BLIP", package="BLIP",
    variants=(Variant("blip-tiny", build_tiny=build_tiny),)
    + tuple(Variant(v.split("/")[-1], v, f"{v.split('/')[-1]}.json") for v in HUB_VARIANTS),
    model_class=AutoModelForImageTextToText,      # maps blip -> BlipForConditionalGeneration (which has no from_config)
    fallback_tokenizer=wordpiece_tokenizer,
    max_positions=lambda config: config.text_config.max_position_embeddings,
    layouts={"default": BLIP_LAYOUT},
    model_types=("blip",),
)
