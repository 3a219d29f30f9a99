"""ViT image classification (google/vit-base-patch16-224 and any `ViTForImageClassification`).

Images are prepared as ViT's image processor does: bilinear resize to the config's image
size, rescale 1/255, normalise with mean and std 0.5. A chat line, a checkpoint input or
--image is an image path (relative paths are also looked up in this folder).
"""

from NNDF.export.first_token import LastLayer, first_token_attention
from NNDF.kinds.encoder_only.family import EncoderFamily
from NNDF.kinds.encoder_only.graphs import EXPORT_ATTENTION, EncoderLayout, image_positions
from NNDF.kinds.encoder_only.tasks import Task
from NNDF.models.family import Variant, hub_variants

from VIT.tiny import build_tiny


def _vit_first_token(layer, hidden, mask):
    """ViTLayer (pre-norm) for the first token, its residuals added as ViTLayer adds them."""
    attn = layer.attention
    normed = layer.layernorm_before(hidden)
    context = first_token_attention(attn.q_proj, attn.k_proj, attn.v_proj, attn.num_attention_heads, normed, mask)
    attended = attn.o_proj(context) + hidden[:, :1]
    return layer.mlp(layer.layernorm_after(attended)) + attended


# ONNX Runtime's "vit" fusions (Attention, SkipLayerNormalization, BiasGelu) before onnxrt's int8
# quantization; its Attention fusion needs the scores divided by sqrt(head_dim), hence the
# export's own attention.
VIT_LAYOUT = EncoderLayout("ViT", {"ForImageClassification": Task.IMAGE_CLASSIFICATION}, image_input=True,
                           ort_fusions="vit", export_attention=EXPORT_ATTENTION,
                           last_layer=LastLayer("layers", _vit_first_token))

VIT_FAMILY = EncoderFamily(
    name="VIT",
    package="VIT",
    variants=(
        Variant("vit-tiny-shapes", build_tiny=build_tiny),
        *hub_variants(["google/vit-base-patch16-224"]),
    ),
    fallback_tokenizer=lambda: None,       # images need no tokenizer
    max_positions=image_positions,
    layouts={"default": VIT_LAYOUT, "vit": VIT_LAYOUT},
    model_types=("vit",),
    samples={Task.IMAGE_CLASSIFICATION: "data/shapes_test.jsonl"},
    calibration_data={Task.IMAGE_CLASSIFICATION: "data/shapes_calibration.jsonl"},
)
