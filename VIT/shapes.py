"""The shapes vit-tiny-shapes learns: seeded drawings of four classes on 48x48 canvases.

`draw(shape, rng)` makes one image: a circle, square, triangle or cross of one of six colours,
a random size and a place near the centre, on one of four plain backgrounds. The tiny model trains on `training_set()`, drawn
here from a fixed seed; the images in `images/` (listed in `data/shapes_test.jsonl`) were
drawn by the same function from another seed and are what `accuracy` and checkpoint.toml score.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "cross")
CANVAS = 48


def draw(shape: str, rng: random.Random) -> Image.Image:
    background = rng.choice([(255, 255, 255), (235, 235, 220), (20, 20, 20), (40, 40, 70)])
    colour = rng.choice([(220, 30, 30), (30, 80, 220), (30, 170, 60), (240, 200, 20), (150, 40, 180), (250, 130, 20)])
    image = Image.new("RGB", (CANVAS, CANVAS), background)
    pen = ImageDraw.Draw(image)
    r = rng.randint(13, 18)
    cx, cy = CANVAS // 2 + rng.randint(-4, 4), CANVAS // 2 + rng.randint(-4, 4)
    if shape == "circle":
        pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        pen.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "triangle":
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    else:
        w = max(3, r // 3)
        pen.rectangle([cx - r, cy - w, cx + r, cy + w], fill=colour)
        pen.rectangle([cx - w, cy - r, cx + w, cy + r], fill=colour)
    return image


def training_set(per_class: int = 100, seed: int = 1234) -> list[tuple[Image.Image, str]]:
    rng = random.Random(seed)
    return [(draw(shape, rng), shape) for _ in range(per_class) for shape in SHAPES]
