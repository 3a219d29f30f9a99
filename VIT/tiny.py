"""vit-tiny-shapes: a ViT small enough for tests that has learned the shapes of VIT/shapes.py.

32x32 inputs in 8x8 patches, 2 layers, 64 wide; four classes (circle, square, triangle,
cross). Trained for a few seconds, seeded, on 400 drawings made from a fixed seed
(`shapes.training_set`) and cached once per machine; `accuracy` scores the shipped images of
`data/shapes_test.jsonl`, drawn from another seed and never trained on.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import ViTConfig, ViTForImageClassification

from NNDF.models.images import ImageSettings, pixel_values
from NNDF.models.tiny_training import cached_training
from VIT.shapes import SHAPES, training_set

FOLDER = Path(__file__).resolve().parent
IMAGE_SIZE, PATCH = 32, 8
STEPS, BATCH, LR = 500, 64, 2e-3


def build_tiny(seed: int):
    id2label = dict(enumerate(SHAPES))
    config = ViTConfig(image_size=IMAGE_SIZE, patch_size=PATCH, hidden_size=64, num_hidden_layers=2,
                       num_attention_heads=4, intermediate_size=128, id2label=id2label,
                       label2id={v: k for k, v in id2label.items()}, architectures=["ViTForImageClassification"])
    model = ViTForImageClassification(config)

    def train():
        drawn = training_set()
        settings = ImageSettings(IMAGE_SIZE, IMAGE_SIZE, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear")
        pixels = torch.from_numpy(pixel_values([image for image, _ in drawn], settings))
        labels = torch.tensor([SHAPES.index(shape) for _, shape in drawn])
        optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
        for _ in range(STEPS):
            pick = torch.randint(0, len(pixels), (BATCH,))
            loss = model(pixel_values=pixels[pick], labels=labels[pick]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    return cached_training("vit-tiny-shapes", seed, model, train, (FOLDER / "shapes.py",),
                           {"steps": STEPS, "batch": BATCH, "lr": LR}), None
