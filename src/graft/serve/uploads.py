"""What one request may cost ``graft serve``, and decoding its images fairly.

A request's images are read in three steps, each bounded:

1. **Headers.** Every upload's header is read first (PIL parses the header only, and only the
   raster formats graft decodes: nothing else is identified). Its decode cost is the pixels
   decoding will produce: the header's width x height, or for a JPEG the size of its draft
   decode at the model's resize size (libjpeg's DCT scaling, 1/2 .. 1/8), since that is all
   graft decodes of it. PNG, TIFF, BMP, GIF have no such mode and pay in full: a 86 KB grey
   PNG can claim 9400 x 9400 pixels (88 Mpx, 265 MB as RGB). An image over ``max_pixels`` is
   that file's error; a request whose images add up to more than ``max_request_pixels`` is
   refused whole (413) before any of them is decoded.
2. **Decoding** runs in a shared thread pool, off the event loop. Fairness: a request has at
   most half the threads at a time, and images costing more than ``HEAVY_PIXELS`` may hold at
   most half the threads together, so a client sending small images finds a thread free
   however many large ones others send (the pool is FIFO, so requests also take turns).
3. **A client that left** is noticed between images (``request.is_disconnected()``): the rest
   of its images are not decoded and it is not batched.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import io
import os
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from graft.errors import ImageDecodeError

# The raster formats a header is read from (PIL's names); anything else is "not an image".
# No format here hands data to another program (EPS, PDF and friends are not listed).
HEADER_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "DIB", "TIFF", "WEBP", "PPM", "TGA", "ICO",
                  "JPEG2000", "AVIF", "HEIF")
# An image costing more than this (decoded pixels) counts as heavy: about 40 ms of PNG
# decoding here, twenty times a typical photo's JPEG draft decode at 224 px.
HEAVY_PIXELS = 4_000_000
_SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class ApiError(Exception):
    """A request graft will not answer: HTTP ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class ClientLeft(Exception):
    """The client disconnected: nothing more is done for its request."""


@dataclass
class Upload:
    """One image of a request: its ``label`` (file name), bytes, decode ``cost`` in pixels, and
    after decoding either ``row`` (the network's input) or ``error`` (one line)."""

    label: str
    data: bytes
    cost: int = 0
    row: np.ndarray | None = None
    error: str | None = None


async def read_uploads(request, max_images: int) -> list[Upload]:
    """The images of a request: multipart ``file`` fields, or the raw body as one image.

    Raises :class:`ApiError` 400 for an empty body, a form without ``file`` fields, a multipart
    body that is cut or malformed (its closing boundary missing), or too many images."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        body = await request.body()  # kept by the request: the form below parses it from memory
        boundary = _boundary(kind)
        if boundary and b"--" + boundary + b"--" not in body:
            raise ApiError(400, "malformed or truncated multipart body: its closing boundary "
                                f"(--{boundary.decode('latin-1')}--) is missing")
        form = await request.form(max_files=max_images + 1, max_fields=max_images + 1)
        items = [value for key, value in form.multi_items() if key == "file"]
        if not items:
            raise ApiError(400, "no 'file' field in the form: send each image as a multipart field named 'file'")
        if any(isinstance(item, str) for item in items):
            raise ApiError(400, "the 'file' field must be a file upload, not text")
        uploads = [Upload(item.filename or f"file {i + 1}", await item.read()) for i, item in enumerate(items)]
    else:
        body = await request.body()
        if not body:
            raise ApiError(400, "empty request: send an image as the body, or as multipart fields named 'file'")
        uploads = [Upload("body", body)]
    if len(uploads) > max_images:
        raise ApiError(400, f"{len(uploads)} images in one request: the limit is {max_images}")
    return uploads


def _boundary(content_type: str) -> bytes | None:
    from python_multipart.multipart import parse_options_header

    _, options = parse_options_header(content_type)
    return options.get(b"boundary")


def decode_cost(data: bytes, min_side: int | None) -> int:
    """Pixels decoding ``data`` will produce, from its header alone (see the module docstring).

    Raises :class:`~graft.errors.ImageDecodeError` (path "upload") for bytes whose header is
    not that of a raster format graft reads."""
    if not data:
        raise ImageDecodeError("upload", "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=_registered()) as image:
                width, height = image.size
                if image.format == "JPEG" and min_side and 0 < min_side < min(width, height):
                    image.draft("RGB", (min_side, min_side))  # sets the scale only; nothing decoded
                    width, height = image.size
    except UnidentifiedImageError:
        raise ImageDecodeError("upload", "not an image (unrecognised format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("upload", f"image too large: {exc} (possible decompression bomb)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # as load_image words them
        raise ImageDecodeError("upload", f"truncated or corrupt image data: {exc}") from None
    except Exception as exc:  # any failure reading one header is that file's problem, never a 500
        raise ImageDecodeError("upload", f"unreadable image header ({type(exc).__name__}: {exc})") from None
    return int(width) * int(height)


def _registered() -> tuple[str, ...]:
    """HEADER_FORMATS that this PIL has (it refuses a name it does not know)."""
    Image.init()
    return tuple(name for name in HEADER_FORMATS if name in Image.OPEN)


def check_costs(uploads: list[Upload], min_side: int | None, max_pixels: int, max_request_pixels: int) -> None:
    """Set each upload's cost (or its error) from its header; raise :class:`ApiError` 413 when
    the request's images together cost more than ``max_request_pixels``."""
    total = 0
    for upload in uploads:
        try:
            upload.cost = decode_cost(upload.data, min_side)
        except ImageDecodeError as exc:
            upload.error = f"{upload.label}: {exc.reason}"
            continue
        if upload.cost > max_pixels:
            upload.error = (f"{upload.label}: image too large: decoding it costs {upload.cost} pixels, over the "
                            f"server's limit of {max_pixels} per image (--max-pixels)")
            continue
        total += upload.cost
        if total > max_request_pixels:
            raise ApiError(413, f"{upload.label}: the request's images cost {total} pixels to decode up to this "
                                f"one, over the server's limit of {max_request_pixels} per request "
                                "(--max-request-pixels): send fewer or smaller images")


def decode_upload(predictor, data: bytes, label: str) -> np.ndarray:
    """Image bytes -> the predictor's input row, by graft's decoding rules (through a file in
    memory-backed /dev/shm where there is one, since those rules read files).

    Raises :class:`ApiError` 400 naming ``label`` and the problem, whatever the decoder raised."""
    try:
        try:
            return _decode_via_file(predictor, data, _SCRATCH)
        except OSError:  # a full /dev/shm (containers often give it 64 MB): the system temp folder
            if _SCRATCH is None:
                raise
            return _decode_via_file(predictor, data, None)
    except ImageDecodeError as exc:
        raise ApiError(400, f"{label}: {exc.reason}") from None
    except Exception as exc:  # a decoder failing in a way graft's rules do not name: still the upload's fault
        raise ApiError(400, f"{label}: cannot be decoded ({type(exc).__name__}: {exc})") from None


def _decode_via_file(predictor, data: bytes, folder: str | None) -> np.ndarray:
    with tempfile.NamedTemporaryFile(dir=folder, prefix="graft-upload-") as tmp:
        tmp.write(data)
        tmp.flush()
        return predictor.decode(tmp.name)


class FairDecoder:
    """The server's decode threads, shared fairly between requests (see the module docstring).

    ``decoded`` counts the images decoded and ``dropped`` the requests given up because their
    client left (counted by the app), for tests and benchmarks."""

    def __init__(self, threads: int):
        self.threads = max(1, int(threads))
        self.per_request = max(1, self.threads // 2)
        self.pool = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="graft-decode")
        self._heavy: asyncio.Semaphore | None = None
        self.decoded = 0
        self.dropped = 0

    async def decode_all(self, request, predictor, uploads: list[Upload]) -> None:
        """Decode every upload without an error yet into its ``row`` (or ``error``), at most
        ``per_request`` at a time; raises :class:`ClientLeft` when the client disconnects."""
        todo = [u for u in uploads if u.error is None]
        for start in range(0, len(todo), self.per_request):
            if await request.is_disconnected():
                raise ClientLeft()
            await asyncio.gather(*(self._decode(predictor, u) for u in todo[start:start + self.per_request]))

    async def _decode(self, predictor, upload: Upload) -> None:
        loop = asyncio.get_running_loop()
        if self._heavy is None:  # made on the serving loop
            self._heavy = asyncio.Semaphore(max(1, self.threads // 2))
        try:
            if upload.cost > HEAVY_PIXELS:
                async with self._heavy:
                    upload.row = await loop.run_in_executor(self.pool, decode_upload, predictor, upload.data,
                                                            upload.label)
            else:
                upload.row = await loop.run_in_executor(self.pool, decode_upload, predictor, upload.data,
                                                        upload.label)
            self.decoded += 1
        except ApiError as exc:
            upload.error = exc.message

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True)
