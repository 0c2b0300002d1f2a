"""Turning a decoded RGB image into the array a backbone expects.

The recipe is timm's eval transform (resize the shorter side to size / crop_pct, centre crop,
scale to [0, 1], normalise), written over PIL + numpy so it needs no torch at decode time.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from graft.data.decode import FORMATS, JPEG_FLAT_GREY, WEBP_COST

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class Preprocessing:
    """How a backbone wants its input: square ``size``, resize ``interpolation``,
    centre ``crop_pct``, per-channel ``mean`` and ``std`` on [0, 1] pixel values.

    Attributes
    ----------
    size : int, default 224
        Output side in pixels.
    interpolation : str, default "bicubic"
        PIL resize filter of the shorter side to ``size / crop_pct``.
    crop_pct : float, default 0.875
        The centre crop's share of the resized image (timm's convention).
    mean, std : tuple of 3 float
        Per-channel normalisation of [0, 1] RGB values (ImageNet's by default)."""

    size: int = 224
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @property
    def resize_size(self) -> int:
        """Length of the shorter side after resizing, before the centre crop."""
        return int(math.floor(self.size / self.crop_pct))

    def with_size(self, size: int) -> "Preprocessing":
        """The same recipe at another resolution (crop fraction kept)."""
        return Preprocessing(size, self.interpolation, self.crop_pct, self.mean, self.std)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(
            size=int(d["size"]),
            interpolation=str(d["interpolation"]),
            crop_pct=float(d["crop_pct"]),
            mean=tuple(float(x) for x in d["mean"]),
            std=tuple(float(x) for x in d["std"]),
        )

    def resize_and_crop(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        short = self.resize_size
        # As torchvision's Resize(int), which timm's eval transform uses: the shorter side
        # becomes exactly ``short``, the longer one is truncated, not rounded.
        if w <= h:
            new_w, new_h = short, int(short * h / w)
        else:
            new_w, new_h = int(short * w / h), short
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), _RESAMPLE[self.interpolation])
        # torchvision's CenterCrop (timm's eval transform): offsets rounded, halves to even.
        # Flooring them instead shifts odd-sized margins by a pixel, which cost flowers17 one
        # validation image against timm's own pipeline (BENCHMARKS.md, issue #12).
        left, top = centre_offset(new_w, self.size), centre_offset(new_h, self.size)
        return img.crop((left, top, left + self.size, top + self.size))

    def to_array(self, img: Image.Image) -> np.ndarray:
        """A (3, size, size) float32 array, normalised."""
        return self.normalize(self.resize_and_crop(img))

    def normalize(self, img: Image.Image) -> np.ndarray:
        """An already sized RGB image as a normalised (3, H, W) float32 array."""
        a = np.asarray(img, dtype=np.float32)
        mean = np.asarray(self.mean, dtype=np.float32) * 255.0
        inv_std = 1.0 / (np.asarray(self.std, dtype=np.float32) * 255.0)
        return ((a - mean) * inv_std).transpose(2, 0, 1).copy()


def centre_offset(length: int, size: int) -> int:
    """Where a centred crop of ``size`` starts in ``length`` pixels: round((length - size) / 2)
    with Python's round (halves to even), as torchvision's CenterCrop computes it."""
    return int(round((length - size) / 2.0))


def input_recipe(preprocessing: dict) -> dict:
    """Every rule that turns an image file into the network's input, written down for a model's
    graft.json and its ONNX metadata, so that code outside graft (PIL + numpy) reproduces
    graft's inputs exactly. :func:`graft.data.folders.load_image` and :class:`Preprocessing` implement it.
    """
    size = int(preprocessing["size"])
    short = int(math.floor(size / float(preprocessing["crop_pct"])))
    return {
        "resize_shorter_side": short,
        "steps": [
            f"open the file with PIL.Image.open(fp, formats={list(FORMATS)}): any other format (EPS, PDF, "
            "...) is refused; a multi-frame file gives its first frame",
            f"JPEG only, when {short} < min(width, height): image.draft('RGB', ({short}, {short})) before "
            "decoding (PIL's DCT-domain downscale by 1/2, 1/4 or 1/8, keeping both sides >= the request)",
            "refuse, before decoding, an image that decodes to more than PIL.Image.MAX_IMAGE_PIXELS pixels: "
            "width x height after the draft for a one-pass JPEG (SOF0/SOF1 whose first scan holds every "
            "component), the header's width x height for every other file (progressive JPEGs included), "
            f"counted {WEBP_COST} times for a WebP (PIL decodes it through full-size RGBA canvases); refuse a PNG "
            "with more than 1 MiB of text chunks (PngImagePlugin.MAX_TEXT_MEMORY = MAX_TEXT_CHUNK = 1 MiB)",
            f"JPEG only: refuse a file whose last row decodes as exactly {JPEG_FLAT_GREY} in every channel while "
            "some pixel does not (libjpeg fills the blocks of data that ended early with that grey)",
            "apply the EXIF orientation: PIL.ImageOps.exif_transpose",
            "to RGB: modes with alpha (RGBA, LA, PA, La, RGBa), and P/L/RGB/1 images with a 'transparency' "
            "entry, are converted to RGBA and alpha-composited over opaque white (255, 255, 255)",
            "to RGB: 16-bit grey (I;16, I;16B, I;16L, I;16N): round(v / 257) as 8-bit grey; 32-bit integer "
            "'I': round(clip(v, 0, 65535) / 257) if its maximum exceeds 255, else clip(v, 0, 255); float 'F': "
            "NaN -> 0, times 255 if its maximum is <= 1, then round(clip(v, 0, 255)); grey is replicated to "
            "three channels; every other mode: PIL's convert('RGB')",
            f"resize so the shorter side is exactly {short} px and the longer side is "
            f"int({short} * longer / shorter) (truncated, as torchvision's Resize), with PIL "
            f"{preprocessing['interpolation']} resampling; skipped when the image already has that size",
            f"centre crop {size} x {size}: left = round((width - {size}) / 2), top = round((height - {size}) / 2), "
            "with Python's round (halves to even), as torchvision's CenterCrop",
            "float32 input: (pixel - 255 * mean) * (1 / (255 * std)) per RGB channel, laid out (N, 3, H, W); "
            "uint8 input (graft export --input uint8): the cropped RGB pixels as they are, laid out "
            "(N, H, W, 3); the model normalises them itself",
        ],
    }
