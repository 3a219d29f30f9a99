"""Images in, pixel values out, exactly as HuggingFace's PIL image processors do it.

`open_image` reads a file (or, given http(s)://, a URL), refuses anything that
is not a readable image of sensible size in one UsageError line, and applies
the EXIF orientation as `transformers.image_utils.load_image` does.
`pixel_values` then repeats the steps of the PIL backend of HF's image processors
(BlipImageProcessor when torchvision is absent) bit for bit: RGB conversion with
transparency composited onto white, a PIL resize, rescale in float64 then
float32, and normalisation in float32.
"""

from __future__ import annotations

import io
import re
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from NNDF.base.errors import UsageError

MAX_PIXELS = 50_000_000                     # refused before decoding: ~150 MB of RGB, far beyond any model input
MAX_DOWNLOAD_BYTES = 64 << 20
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class ImageSettings:
    """What a model's image processor does: resize to height x width, rescale, normalise."""

    height: int
    width: int
    mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    std: tuple[float, ...] = OPENAI_CLIP_STD
    resample: str = "bicubic"
    rescale_factor: float = 1 / 255


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def as_source(value) -> str:
    """A flag value as typed: argparse's Path turns https://host into https:/host."""
    text = str(value)
    return re.sub(r"^(https?):/(?=[^/])", r"\1://", text)


def open_image(source: str, base_dirs: tuple[Path, ...] = ()) -> Image.Image:
    """The decoded, upright image at `source` (a path, tried as given and then under each
    of `base_dirs`, or an http(s) URL), or a one-line UsageError saying what is wrong."""
    if is_url(source):
        data, name = _download(source), source
        opener = lambda: Image.open(io.BytesIO(data))  # noqa: E731
    else:
        path = _find(source, base_dirs)
        name = str(path)
        opener = lambda: Image.open(path)  # noqa: E731
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we apply our own, lower limit
            image = opener()                 # lazy: reads the header only
            _check_size(image, name)
            image.load()
    except UsageError:
        raise
    except Image.DecompressionBombError:
        raise UsageError(f"image {name} is far larger than the {MAX_PIXELS // 1_000_000}-megapixel limit",
                         "downscale it first") from None
    except UnidentifiedImageError:
        raise UsageError(f"{name} is not an image file PIL can read", "pass a PNG, JPEG, BMP, GIF or WebP image") from None
    except (OSError, SyntaxError, ValueError) as e:   # truncated or corrupt data, unreadable file
        reason = getattr(e, "strerror", None) or (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise UsageError(f"cannot read image {name}: {reason}", "check that the file is a complete, valid image") from None
    return ImageOps.exif_transpose(image)


def _find(source: str, base_dirs: tuple[Path, ...]) -> Path:
    path = Path(source).expanduser()
    candidates = [path] + ([Path(b) / path for b in base_dirs] if not path.is_absolute() else [])
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if path.exists():
        raise UsageError(f"image {source} is not a file", "pass the path of an image file")
    where = f" (also looked under {', '.join(str(b) for b in base_dirs)})" if base_dirs and not path.is_absolute() else ""
    raise UsageError(f"image file {source} does not exist{where}", "check the path")


def _check_size(image: Image.Image, name: str) -> None:
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise UsageError(f"image {name} is {width}x{height} ({width * height / 1e6:.0f} megapixels), above the "
                         f"{MAX_PIXELS // 1_000_000}-megapixel limit", "downscale it first")
    if width == 0 or height == 0:
        raise UsageError(f"image {name} is empty ({width}x{height})")


def _download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "hf-trt-toolkit"}),
                                    timeout=30) as response:
            data = response.read(MAX_DOWNLOAD_BYTES + 1)
    except urllib.error.HTTPError as e:
        raise UsageError(f"could not download image {url}: HTTP {e.code} {e.reason}", "check the URL") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise UsageError(f"could not download image {url}: {reason}", "check the URL and the network, or pass a local file") from None
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise UsageError(f"image {url} is larger than {MAX_DOWNLOAD_BYTES >> 20} MB", "download and downscale it first")
    return data


def to_rgb(image: Image.Image) -> Image.Image:
    """HF's convert_to_rgb: transparency is composited onto white, everything else converted."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def pixel_values(images: list[Image.Image], settings: ImageSettings) -> np.ndarray:
    """(batch, 3, height, width) float32, equal to the HF image processor's output."""
    mean = np.asarray(settings.mean, np.float32)
    std = np.asarray(settings.std, np.float32)
    out = np.empty((len(images), 3, settings.height, settings.width), np.float32)
    for i, image in enumerate(images):
        resized = to_rgb(image).resize((settings.width, settings.height), resample=_RESAMPLE[settings.resample])
        scaled = (np.asarray(resized, np.float64) * settings.rescale_factor).astype(np.float32)
        out[i] = ((scaled - mean) / std).transpose(2, 0, 1)
    return out
