"""Decoding one image file to a correct RGB picture, or an ImageDecodeError saying why not.

Only the raster formats in :data:`FORMATS` are ever opened: PIL is asked for exactly those
(``Image.open(fp, formats=FORMATS)``), so a PostScript, PDF or any other file PIL could hand to
an external program (Ghostscript for EPS) is refused from its first bytes, and nothing on the
decode path starts another program. The rules (JPEG draft decoding, EXIF orientation, alpha
over white, 16-bit scaling, the pixel limit against decompression bombs) are also written into
each model's ``input_recipe``, so code outside graft can reproduce them.
"""
from __future__ import annotations

import contextlib
import io
import os
import stat
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    IcoImagePlugin,
    Image,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    PpmImagePlugin,
    TiffImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

from graft.data.jpeg_markers import MAX_JPEG_SCANS, jpeg_scans, one_pass_jpeg
from graft.errors import ImageDecodeError

# Imported above so that they are registered: Image.open then never needs PIL's init(), and
# tries these parsers and no other. JPEG covers MPO (multi-picture JPEG from phones) and PNG
# covers APNG; DIB is BMP without its file header; PPM is Netpbm (PBM, PGM, PPM, PFM).
# Left out on purpose: EPS/PS/PDF (Ghostscript), TGA (no signature: it would be tried on any
# bytes), JPEG 2000, AVIF, HEIF (large decoders for formats photos rarely come in), DDS, PSD and
# the rest of PIL's list.
_PLUGINS = (JpegImagePlugin, PngImagePlugin, GifImagePlugin, BmpImagePlugin, TiffImagePlugin,
            WebPImagePlugin, IcoImagePlugin, PpmImagePlugin)
FORMATS: tuple[str, ...] = tuple(
    name for name in ("JPEG", "PNG", "GIF", "BMP", "DIB", "TIFF", "WEBP", "ICO", "PPM") if name in Image.OPEN
)
FORMAT_NAMES = "JPEG, PNG, GIF, BMP, TIFF, WebP, ICO, PBM/PGM/PPM"

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
JPEG_FLAT_GREY = 128  # what libjpeg outputs for blocks it had no data for (all coefficients 0)
_ICO_SIGNATURE = b"\x00\x00\x01\x00"
# PIL decodes every WebP, a still one too, with its animation decoder, which keeps full-size
# RGBA canvases: a 4000 x 4000 WebP held 306 MB and took 0.35 s to decode, a PNG of that size
# 183 MB and 0.21 s (1.7x both). A WebP's decode cost is counted at this many times its pixels.
WEBP_COST = 2
# graft never reads a PNG's text chunks, but PIL inflates every zTXt/iTXt before the pixels while
# opening the file, up to 64 MB a file (a 66 KB PNG cost 0.21 s and 62 MB to read its header).
# 1 MiB is far above real metadata (XMP, ICC notes); a file with more text is refused, cheaply.
PngImagePlugin.MAX_TEXT_CHUNK = min(PngImagePlugin.MAX_TEXT_CHUNK, 1024 * 1024)
PngImagePlugin.MAX_TEXT_MEMORY = min(PngImagePlugin.MAX_TEXT_MEMORY, 1024 * 1024)


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


def _too_large(width: int, height: int, limit: int, decoded: tuple[int, int], factor: int = 1) -> str:
    scaled = "" if decoded == (width, height) else f" ({decoded[0]} x {decoded[1]} at JPEG draft scale)"
    if factor != 1:
        scaled = f" (counted {factor} times: a WebP decodes through full-size RGBA canvases)"
    return (
        f"image too large: {width} x {height} pixels{scaled} exceeds the limit of {limit} "
        f"(possible decompression bomb)"
    )


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, read without decoding pixel data (:func:`read_header`).

    ``format``: PIL's name (JPEG, MPO, PNG, ...); ``width``, ``height``: px as stored, before
    EXIF orientation; ``decoded_pixels``: the pixels decoding it holds at once, which
    ``max_pixels`` is checked against: width x height, or for a one-pass JPEG read with
    ``min_side`` the size of its draft decode (1/2 .. 1/8 of each side), or for a WebP
    :data:`WEBP_COST` x width x height (its decoder's canvases cost that much more).
    """

    format: str
    width: int
    height: int
    decoded_pixels: int


@contextlib.contextmanager
def _opened(source, name: str | None):
    """(label for errors, seekable binary file) of a path, bytes, or binary file object."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        if not len(source):
            raise ImageDecodeError(label, "empty file (0 bytes)")
        yield label, io.BytesIO(source)
        return
    if hasattr(source, "read"):
        label = name or str(getattr(source, "name", "") or "<stream>")
        seekable = getattr(source, "seekable", None)
        yield label, source if seekable is not None and seekable() else io.BytesIO(source.read())
        return
    path = os.fspath(source)
    label = name or os.fsdecode(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ImageDecodeError(label, "file not found") from None
    except OSError as exc:
        raise ImageDecodeError(label, f"cannot read file: {exc.strerror or exc}") from None
    # Checked before opening: opening a FIFO would block, and a directory is not an image.
    if not stat.S_ISREG(info.st_mode):
        raise ImageDecodeError(label, "not a regular file")
    if info.st_size == 0:
        raise ImageDecodeError(label, "empty file (0 bytes)")
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise ImageDecodeError(label, "file not found") from None
    except OSError as exc:
        raise ImageDecodeError(label, f"cannot read file: {exc.strerror or exc}") from None
    with handle:
        yield label, handle


def _accepts(accept, prefix: bytes) -> bool:
    try:
        verdict = accept(prefix)
    except Exception:  # a plugin's signature test failing on odd bytes: not that format
        return False
    return bool(verdict) and not isinstance(verdict, str)


def _unrecognised(fp) -> str:
    """Why PIL identified none of FORMATS: a damaged header of one of them, another format
    (named, never opened), or not an image at all."""
    try:
        fp.seek(0)
        prefix = fp.read(16)
        for name in FORMATS:
            if _accepts(Image.OPEN[name][1], prefix):
                return f"corrupt or unsupported {name} header"
        Image.init()  # registers PIL's other parsers, to name the format; none is called
        for name, (_, accept) in list(Image.OPEN.items()):
            if accept is not None and name not in FORMATS and _accepts(accept, prefix):
                return f"not a supported image format ({name}; graft reads {FORMAT_NAMES})"
    except Exception:  # naming the format is a courtesy: the file is refused either way
        pass
    return "not an image (unrecognised format)"


def _message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


@contextlib.contextmanager
def _reasons(label: str, fp):
    """Every failure while decoding one file becomes that file's ImageDecodeError.

    A decoder can fail in ways PIL does not document (NotImplementedError, struct.error,
    KeyError, ... on fuzzed input): that is still the file's problem, never the caller's
    traceback. MemoryError too: the pixel limit bounds the image itself, so running out of
    memory here means a header or chunk that lies about its size.
    """
    try:
        # PIL's own size warning is silenced because the checks here apply the caller's limit
        # (which may be higher than PIL's); PIL's hard error (twice its limit) still fires and
        # is turned into the same kind of report.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except ImageDecodeError:
        raise
    except FileNotFoundError:
        raise ImageDecodeError(label, "file not found") from None
    except PermissionError as exc:
        raise ImageDecodeError(label, f"cannot read file: {exc.strerror or exc}") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(label, f"image too large: {exc} (possible decompression bomb)") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(label, _unrecognised(fp)) from None
    except MemoryError as exc:
        raise ImageDecodeError(label, f"out of memory while decoding ({_message(exc)})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if "MAX_TEXT" in str(exc):  # PngImagePlugin's text limits, lowered above
            raise ImageDecodeError(label, "PNG with over 1 MiB of text chunks (graft reads none of them; "
                                          "possible decompression bomb)") from None
        raise ImageDecodeError(label, f"truncated or corrupt image data: {_message(exc)}") from None
    except Exception as exc:
        raise ImageDecodeError(label, f"cannot be decoded ({type(exc).__name__}: {_message(exc)})") from None


def _check_scans(image: Image.Image, fp, label: str) -> None:
    if isinstance(image, JpegImagePlugin.JpegImageFile) and (scans := jpeg_scans(fp)) > MAX_JPEG_SCANS:
        raise ImageDecodeError(label, f"JPEG with {scans} scans, over the limit of {MAX_JPEG_SCANS} "
                                      "(each scan decodes the whole image again: a decoding-time bomb)")


def _ico_size(fp) -> tuple[int, int] | None:
    """(width, height) of the largest picture an ICO file embeds, as each picture's own header
    (PNG IHDR or bitmap header) says; None for a file that is not an ICO.

    PIL's ICO reader decodes the picture while opening the file, trusting the picture's header
    over the directory (a 16 x 16 entry can hold a 13000 x 13000 PNG: 676 MB, 2 s)."""
    position = fp.tell()
    try:
        fp.seek(0)
        head = fp.read(6)
        if len(head) < 6 or head[:4] != _ICO_SIGNATURE:
            return None
        directory = fp.read(16 * int.from_bytes(head[4:6], "little"))
        largest = (0, 0)
        for start in range(0, len(directory) - 15, 16):
            entry = directory[start:start + 16]
            size = (entry[0] or 256, entry[1] or 256)
            fp.seek(int.from_bytes(entry[12:16], "little"))
            picture = fp.read(24)
            if picture[:8] == b"\x89PNG\r\n\x1a\n" and len(picture) == 24:
                size = (int.from_bytes(picture[16:20], "big"), int.from_bytes(picture[20:24], "big"))
            elif len(picture) >= 12:  # a bitmap header (OS/2: 16-bit sides); the height counts the mask
                step = 2 if int.from_bytes(picture[:4], "little") == 12 else 4
                size = tuple(abs(int.from_bytes(picture[i:i + step], "little", signed=step == 4))
                             for i in (4, 4 + step))
            if size[0] * size[1] > largest[0] * largest[1]:
                largest = size
        return largest
    finally:
        fp.seek(position)


def _factor(image: Image.Image) -> int:
    return WEBP_COST if image.format == "WEBP" else 1


def _draft(image: Image.Image, fp, min_side: int | None) -> tuple[int, int]:
    """Let a JPEG decode at the smallest 1/2, 1/4, 1/8 scale keeping its shorter side >=
    ``min_side``; the size whose pixels decoding will hold (what the pixel limit applies to)."""
    size = image.size
    if min_side is None or not isinstance(image, JpegImagePlugin.JpegImageFile):
        return size
    side = int(min_side)
    if 0 < side < min(size):
        # draft picks the largest scale keeping both sides at least the requested ones; the
        # shorter side binds, so (side, side) keeps the shorter side >= min_side. Rotation
        # does not change which side is shorter, so the EXIF transpose after stays right.
        image.draft("RGB", (side, side))
    return image.size if one_pass_jpeg(fp) else size


def _missing_data_rows(image: Image.Image) -> int:
    """Rows at the bottom of a decoded JPEG that libjpeg filled in for want of data: a scan
    cut short (then ended by an EOI marker, so nothing fails) leaves every remaining block's
    coefficients at zero, which decodes as exactly 128 in every channel. 0 when the last row
    has any other value, and when the whole image is that grey (nothing to tell it from)."""
    if image.mode not in ("L", "RGB"):
        return 0
    width, height = image.size
    if image.crop((0, height - 1, width, height)).tobytes().strip(bytes([JPEG_FLAT_GREY])):
        return 0
    rows = np.asarray(image).reshape(height, -1)
    flat = np.all(rows == JPEG_FLAT_GREY, axis=1)
    if flat.all():
        return 0
    return int(height - 1 - np.flatnonzero(~flat)[-1])


def _oriented(image: Image.Image, label: str) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:
        raise ImageDecodeError(label, f"corrupt EXIF metadata: {_message(exc)}") from None


def read_header(source, *, min_side: int | None = None, name: str | None = None) -> ImageHeader:
    """The :class:`ImageHeader` of ``source`` (a path, bytes, or binary file object), from
    its header alone, by the rules of :func:`load_image`: only FORMATS are identified.

    Raises :class:`ImageDecodeError` (path ``name``, or the path; ``<bytes>`` otherwise) for a
    file that is missing, empty, not one of FORMATS, or whose header is damaged."""
    with _opened(source, name) as (label, fp), _reasons(label, fp):
        if (icon := _ico_size(fp)) is not None:  # PIL would decode it to read its size
            return ImageHeader("ICO", icon[0], icon[1], icon[0] * icon[1])
        with Image.open(fp, formats=FORMATS) as image:
            _check_scans(image, fp, label)
            width, height = image.size
            decoded = _draft(image, fp, min_side)
            return ImageHeader(str(image.format), width, height, decoded[0] * decoded[1] * _factor(image))


def load_image(
    source, *, min_side: int | None = None, max_pixels: int | None = None, name: str | None = None
) -> Image.Image:
    """Decode one image to a fully loaded RGB image, or raise ImageDecodeError.

    Parameters
    ----------
    source : str, bytes, os.PathLike or binary file object
        A path, the file's bytes, or a file object (an upload), all decoded by the same rules.
    min_side : int, optional
        Let JPEG decoding shrink by a power of two, keeping the shorter side at least this long.
    max_pixels : int, optional
        Refuse an image that would decode to more pixels (default ``PIL.Image.MAX_IMAGE_PIXELS``).
    name : str, optional
        How errors name a ``source`` given as bytes or a file object.

    Returns
    -------
    PIL.Image.Image
        Mode RGB, pixels loaded.

    Raises
    ------
    ImageDecodeError
        Every failure, whatever its kind, with the reason.

    Notes
    -----
    Only :data:`FORMATS` are opened; anything else is refused as "not a supported image
    format (...)" from its first bytes, and no decoder here starts another program. EXIF
    orientation is applied, transparency is composited over white, 16-bit and float images
    are scaled to 8 bits, and multi-frame files give their first frame. ``max_pixels`` is
    checked before any pixel data is decoded: the header's width x height, or for a
    one-pass JPEG with ``min_side`` its draft size, so a 12000 x 9000 photo read for a 256 px
    model is decoded at 1500 x 1125 instead of being called a bomb (PIL's own refusal above
    twice its limit still applies); a WebP counts :data:`WEBP_COST` times its pixels. A PNG with
    more than 1 MiB of text chunks is refused (PIL would inflate them). A JPEG whose data ends
    early but is closed by an EOI marker, which libjpeg decodes without an error as flat grey, is
    refused too.
    """
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    with _opened(source, name) as (label, fp), _reasons(label, fp):
        icon = _ico_size(fp)
        if limit is not None and icon is not None and icon[0] * icon[1] > limit:
            raise ImageDecodeError(label, _too_large(icon[0], icon[1], limit, icon))
        with Image.open(fp, formats=FORMATS) as image:
            _check_scans(image, fp, label)
            width, height = image.size
            decoded = _draft(image, fp, min_side)
            if limit is not None and decoded[0] * decoded[1] * _factor(image) > limit:
                raise ImageDecodeError(label, _too_large(width, height, limit, decoded, _factor(image)))
            image.load()
            if isinstance(image, JpegImagePlugin.JpegImageFile):
                missing = _missing_data_rows(image)
                if missing:
                    raise ImageDecodeError(label, (
                        f"corrupt JPEG: its data ends early, the bottom {missing} of "
                        f"{image.size[1]} rows would be flat grey"))
            rgb = _to_rgb(_oriented(image, label))
            rgb.load()
    return rgb
