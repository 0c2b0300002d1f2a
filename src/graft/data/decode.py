"""Decoding one image file to a correct RGB picture, or an ImageDecodeError saying why not.

The rules (JPEG draft decoding, EXIF orientation, alpha over white, 16-bit scaling, the pixel
limit against decompression bombs) are also written into each model's ``input_recipe``, so code
outside graft can reproduce them.
"""
from __future__ import annotations

import os
import stat
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from graft.errors import ImageDecodeError

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})


def _over_white(image: Image.Image) -> Image.Image:
    """Composite an image with alpha over white: transparent areas read as white paper,
    not as whatever colour the invisible pixels happen to store (often black)."""
    if image.mode == "La":  # PIL converts premultiplied La only to LA
        image = image.convert("LA")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _gray_array_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(gray.astype(np.uint8), mode="L").convert("RGB")


def _to_rgb(image: Image.Image) -> Image.Image:
    """A new RGB image with the content of ``image`` whatever its mode."""
    mode = image.mode
    if mode in _ALPHA_MODES:
        return _over_white(image)
    if "transparency" in image.info and mode in ("P", "L", "RGB", "1"):
        # Palette or colour-key transparency: same treatment as an alpha channel.
        return _over_white(image.convert("RGBA"))
    if mode in _SIXTEEN_BIT_MODES:
        # PIL's convert clips 16-bit values at 255 (near-white images); rescale instead.
        values = np.asarray(image).astype(np.float64)
        return _gray_array_to_rgb(np.round(values / 257.0))
    if mode == "I":
        values = np.asarray(image).astype(np.float64)
        if values.size and values.max() > 255:
            # 32-bit container holding 16-bit data (the usual case, e.g. 16-bit PNG/TIFF).
            return _gray_array_to_rgb(np.round(np.clip(values, 0, 65535) / 257.0))
        return _gray_array_to_rgb(np.clip(values, 0, 255))
    if mode == "F":
        values = np.nan_to_num(np.asarray(image).astype(np.float64), nan=0.0)
        if values.size and values.max() <= 1.0:
            values = values * 255.0
        return _gray_array_to_rgb(np.round(np.clip(values, 0, 255)))
    # RGB (copied), L, 1, CMYK, YCbCr, LAB, HSV, RGBX, ...: PIL's conversions are right.
    return image.convert("RGB")


def _too_large(width: int, height: int, limit: int) -> str:
    return (
        f"image too large: {width} x {height} pixels exceeds the limit of {limit} "
        f"(possible decompression bomb)"
    )


def load_image(
    path, *, min_side: int | None = None, max_pixels: int | None = None
) -> Image.Image:
    """Decode one image file to a fully loaded RGB image, or raise ImageDecodeError.

    EXIF orientation is applied, transparency is composited over white, 16-bit and float
    images are scaled to 8 bits, and multi-frame files give their first frame.
    ``max_pixels`` (default ``PIL.Image.MAX_IMAGE_PIXELS``) rejects images whose header
    claims more pixels, before any pixel data is decoded. ``min_side`` lets JPEG decoding
    shrink by a power of two while keeping the shorter side at least that long.
    """
    path_str = os.fspath(path)
    try:
        info = os.stat(path_str)
    except FileNotFoundError:
        raise ImageDecodeError(path_str, "file not found") from None
    except OSError as exc:
        raise ImageDecodeError(path_str, f"cannot read file: {exc.strerror or exc}") from None
    # Checked before opening: opening a FIFO would block, and a directory is not an image.
    if not stat.S_ISREG(info.st_mode):
        raise ImageDecodeError(path_str, "not a regular file")
    if info.st_size == 0:
        raise ImageDecodeError(path_str, "empty file (0 bytes)")

    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    try:
        # PIL's own size warning is silenced because the header check below applies the
        # caller's limit (which may be higher than PIL's); PIL's hard error (twice its
        # limit) still fires and is turned into the same kind of report.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path_str) as image:
                width, height = image.size
                if limit is not None and width * height > limit:
                    raise ImageDecodeError(path_str, _too_large(width, height, limit))
                if min_side is not None and image.format == "JPEG":
                    side = int(min_side)
                    if 0 < side < min(width, height):
                        # draft picks the largest 1/2, 1/4, 1/8 scale keeping both sides at
                        # least the requested ones; the shorter side binds, so (side, side)
                        # keeps the shorter side >= min_side. Rotation does not change
                        # which side is shorter, so the EXIF transpose below stays right.
                        image.draft("RGB", (side, side))
                image.load()
                try:
                    oriented = ImageOps.exif_transpose(image)
                except (OSError, SyntaxError, ValueError, KeyError, TypeError) as exc:
                    raise ImageDecodeError(
                        path_str, f"corrupt EXIF metadata: {exc}"
                    ) from None
                rgb = _to_rgb(oriented)
    except ImageDecodeError:
        raise
    except FileNotFoundError:
        raise ImageDecodeError(path_str, "file not found") from None
    except PermissionError as exc:
        raise ImageDecodeError(path_str, f"cannot read file: {exc.strerror or exc}") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(
            path_str, f"image too large: {exc} (possible decompression bomb)"
        ) from None
    except UnidentifiedImageError:
        raise ImageDecodeError(path_str, "not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(path_str, f"truncated or corrupt image data: {exc}") from None
    rgb.load()
    return rgb
