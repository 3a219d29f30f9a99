"""A loaded image-to-text model: how the actions' prompts become model inputs.

A prompt names an image and, optionally, a text prefix to continue (conditional captioning):

    "images/red_circle.png"            caption the image
    "images/red_circle.png | a red"    a caption that starts with "a red"
    "https://host/cat.jpg | a photo of"

Relative paths are looked up in the current directory, then in the family's folder (where its
shipped images are). The batch the backends receive is an `ImagePrompts` (pixel values + the
decoder prompt: bos and the prefix tokens, left-padded) where text families receive token ids.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from NNDF.base.config import RunConfig
from NNDF.base.errors import UsageError
from NNDF.models.family import LoadedModel
from NNDF.models.images import ImageSettings, as_source, is_url, open_image, pixel_values
from NNDF.models.tokenizers import decode_safely, pad_rows

SEPARATOR = "|"


@dataclass
class ImagePrompts:
    """A batch of image-to-text prompts, in the place text families put input_ids."""

    pixel_values: np.ndarray    # (batch, 3, height, width) float32
    input_ids: np.ndarray       # (batch, prompt_len) int64: bos + prefix tokens, left-padded


def split_prompt(prompt: str) -> tuple[str, str]:
    """"image | prefix" -> (image, prefix); a prompt without "|" is an image alone."""
    image, _, prefix = prompt.partition(SEPARATOR)
    if not image.strip():
        raise UsageError(f"prompt {prompt!r} names no image",
                         f"write IMAGE or IMAGE {SEPARATOR} TEXT PREFIX, e.g. images/cat.png {SEPARATOR} a photo of")
    return image.strip(), prefix.strip()


@dataclass
class ImageTextModel(LoadedModel):
    image_settings: ImageSettings | None = None
    bos_id: int = 0
    image_dirs: tuple[Path, ...] = ()          # where relative image paths are also looked up
    caption_samples: Path | None = None         # shipped {"image", "text"} rows `accuracy` scores by default
    _pixels: OrderedDict = field(default_factory=OrderedDict, repr=False)

    # ------------------------------------------------------------------ images
    def image_pixels(self, source: str) -> np.ndarray:
        """(3, height, width) for one image; recent images are kept, so chat reads its image once."""
        if source not in self._pixels:
            image = open_image(source, () if is_url(source) else self.image_dirs)
            self._pixels[source] = pixel_values([image], self.image_settings)[0]
            while len(self._pixels) > 16:
                self._pixels.popitem(last=False)
        self._pixels.move_to_end(source)
        return self._pixels[source]

    def prompt_ids(self, prefix: str) -> list[int]:
        """bos + the prefix's tokens: what BLIP's generate makes of its processor's "[CLS] prefix [SEP]"."""
        return [self.bos_id] + (self.tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else [])

    # ------------------------------------------------------------------ LoadedModel's prompt methods
    reads_images = True        # accuracy scores captions of images (not a dataclass field)

    def caption_sequence(self, row: dict, n_targets: int) -> tuple[np.ndarray, np.ndarray]:
        """(the decoder sequence scored: bos + the caption's tokens, the image's pixel values), for
        teacher-forced accuracy; the caption's last `n_targets` tokens are its targets."""
        ids = self.prompt_ids(row["text"])
        if len(ids) - 1 < max(n_targets, 1):   # bos and the image are the context; every caption token can be a target
            raise UsageError(f"the caption {row['text']!r} has only {len(ids) - 1} tokens, too few for {n_targets} "
                             "targets", "lower --tokens-to-generate or use longer captions")
        if len(ids) > self.max_positions:
            raise UsageError(f"the caption {row['text']!r} needs {len(ids)} text positions, but {self.variant} has "
                             f"{self.max_positions}", "use shorter captions")
        return np.asarray(ids, np.int64), self.image_pixels(row["image"])

    @property
    def times_encoder(self) -> bool:
        return True   # the vision encoder
    def encode_prompts(self, prompts: list[str], use_mask: bool, max_new_tokens: int) -> tuple[ImagePrompts, np.ndarray]:
        parsed = [split_prompt(p) for p in prompts]
        encoded = [self.prompt_ids(prefix) for _, prefix in parsed]
        lengths = {len(e) for e in encoded}
        if len(lengths) > 1 and not use_mask:
            raise UsageError("text prefixes of different lengths in one batch need an attention mask", "add --use-mask")
        longest = max(lengths)
        if longest + max_new_tokens > self.max_positions:
            raise UsageError(f"a prefix of {longest - 1} tokens plus {max_new_tokens} new tokens exceeds the model's "
                             f"{self.max_positions} text positions", "shorten the prefix or lower --output-seq-len")
        ids, mask = pad_rows(encoded, self.generation_defaults["pad_token_id"], "left")
        pixels = np.stack([self.image_pixels(image) for image, _ in parsed])
        return ImagePrompts(pixels, ids), mask

    def output_text(self, prompt: str, new_tokens: np.ndarray) -> str:
        """The caption as HF decodes BLIP's output: the prefix and its continuation, up to EOS."""
        eos = self.generation_defaults["eos_token_id"]
        tokens = [int(t) for t in new_tokens]
        if eos in tokens:
            tokens = tokens[: tokens.index(eos)]
        return decode_safely(self.tokenizer, self.prompt_ids(split_prompt(prompt)[1])[1:] + tokens)

    def check_image_flag(self, cfg: RunConfig) -> None:
        """A given --image must be readable. Checked right after loading, before any export."""
        if cfg.image is not None:
            self.image_pixels(as_source(cfg.image))

    def chat_prompt(self, cfg: RunConfig) -> Callable[[str], str | None]:
        """With --image each chat line is a text prefix for it (an empty line asks for a plain
        caption); without, each line names its image as checkpoint.toml's inputs do,
        `IMAGE` or `IMAGE | PREFIX` (a relative path is also looked up in the family's folder)."""
        if cfg.image is None:
            return lambda line: line.strip() or None
        self.check_image_flag(cfg)
        source = as_source(cfg.image)
        return lambda line: f"{source} {SEPARATOR} {line.strip()}"

    def chat_hint(self, cfg: RunConfig) -> str | None:
        if cfg.image is not None:
            return f"each line: a caption prefix for {cfg.image} (an empty line: a plain caption)"
        return (f"each line: an image path or URL, optionally followed by {SEPARATOR} and a caption prefix "
                f"(e.g. images/red_circle.png {SEPARATOR} a red); or start chat with --image PATH")

    def benchmark_lengths(self, input_len: int, new_tokens: int, keep_input: bool, keep_new: bool) -> tuple[int, int]:
        """The benchmark's text is bos and the new tokens (no prefix): those fit the text positions."""
        return input_len, (new_tokens if keep_new else min(new_tokens, self.max_positions - 1))

    def random_prompts(self, cfg: RunConfig) -> tuple[ImagePrompts, np.ndarray]:
        """Benchmark input: --image if given, else seeded random pixels; no prefix, so the
        decoder starts from bos and generates exactly --output-seq-len tokens."""
        if 1 + cfg.generation.max_new_tokens > self.max_positions:
            raise UsageError(f"--output-seq-len {cfg.generation.max_new_tokens} needs {1 + cfg.generation.max_new_tokens} "
                             f"text positions, but {self.variant} has {self.max_positions}", "lower it")
        s = self.image_settings
        if cfg.image is not None:
            pixels = np.repeat(self.image_pixels(as_source(cfg.image))[None], cfg.batch_size, axis=0)
        else:
            rng = np.random.default_rng(cfg.seed)
            noise = rng.integers(0, 256, (cfg.batch_size, s.height, s.width, 3), dtype=np.uint8)
            pixels = pixel_values([Image.fromarray(n) for n in noise], s)
        ids = np.full((cfg.batch_size, 1), self.bos_id, np.int64)
        return ImagePrompts(pixels, ids), np.ones_like(ids)
