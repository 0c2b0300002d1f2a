"""What one request may cost ``graft serve``, and decoding its images fairly.

A request's images are read in three steps, each bounded:

1. **Headers.** Every upload's header is read first (:func:`graft.data.decode.read_header`:
   only the raster formats graft decodes are identified), in the decode threads as step 2,
   never on the event loop (a header can cost as much as decoding). Its decode cost is the pixels
   decoding will hold: the header's width x height, or for a one-pass JPEG the size of its
   draft decode at the model's resize size (libjpeg's DCT scaling, 1/2 .. 1/8), since that is
   all graft decodes of it. PNG, TIFF, BMP, GIF have no such mode and pay in full: a 86 KB grey
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
from dataclasses import dataclass

import numpy as np

from graft.data.decode import read_header
from graft.errors import ImageDecodeError

# An image costing more than this (decoded pixels) counts as heavy: a 4 Mpx grey PNG takes
# 74 ms to decode for a 224 px model here (loaded machine), a hymenoptera photo 13 ms.
HEAVY_PIXELS = 4_000_000


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
            # Starlette reads a part as a file only by its filename= parameter; RFC 7578 (4.2) says
            # filename*= is not to be used in forms, so a part carrying only that arrives as text
            raise ApiError(400, "the 'file' field must be a file upload (its part's Content-Disposition "
                                "needs filename=\"...\"; filename*= alone is read as text), not text")
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


def decode_cost(data: bytes, min_side: int | None, label: str = "upload") -> int:
    """Pixels decoding ``data`` will hold, from its header alone (:func:`graft.data.decode.read_header`:
    width x height, or a one-pass JPEG's draft size at ``min_side``).

    Raises :class:`~graft.errors.ImageDecodeError` for bytes that are not one of the raster
    formats graft reads, or whose header is damaged."""
    return read_header(data, min_side=min_side, name=label).decoded_pixels


def check_cost(upload: Upload, min_side: int | None, max_pixels: int) -> None:
    """Set the upload's cost from its header, or its error (not an image, over ``max_pixels``)."""
    try:
        upload.cost = decode_cost(upload.data, min_side, upload.label)
    except ImageDecodeError as exc:
        upload.error = f"{upload.label}: {exc.reason}"
        return
    if upload.cost > max_pixels:
        upload.error = (f"{upload.label}: image too large: decoding it costs {upload.cost} pixels, over the "
                        f"server's limit of {max_pixels} per image (--max-pixels)")


def check_budget(uploads: list[Upload], max_request_pixels: int) -> None:
    """Raise :class:`ApiError` 413 naming the first upload at which the request's readable images
    (costs set by :func:`check_cost`) together cost more than ``max_request_pixels``."""
    total = 0
    for upload in uploads:
        if upload.error is not None:
            continue
        total += upload.cost
        if total > max_request_pixels:
            raise ApiError(413, f"{upload.label}: the request's images cost {total} pixels to decode up to this "
                                f"one, over the server's limit of {max_request_pixels} per request "
                                "(--max-request-pixels): send fewer or smaller images")


def check_costs(uploads: list[Upload], min_side: int | None, max_pixels: int, max_request_pixels: int) -> None:
    """:func:`check_cost` for each upload, then :func:`check_budget`, in the calling thread."""
    for upload in uploads:
        check_cost(upload, min_side, max_pixels)
    check_budget(uploads, max_request_pixels)


def decode_upload(predictor, data: bytes, label: str, max_pixels: int | None = None) -> np.ndarray:
    """Image bytes -> the predictor's input row, decoded from memory by graft's rules
    (:func:`graft.data.decode.load_image`).

    Raises :class:`ApiError` 400 naming ``label`` and the problem, whatever the decoder raised."""
    try:
        return predictor.decode(data, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        raise ApiError(400, f"{label}: {exc.reason}") from None
    except Exception as exc:  # a failure graft's rules do not name: still the upload's fault, not a 500
        raise ApiError(400, f"{label}: cannot be decoded ({type(exc).__name__}: {exc})") from None


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

    async def check_all(self, request, uploads: list[Upload], min_side: int | None, max_pixels: int,
                        max_request_pixels: int) -> None:
        """:func:`check_costs` in the decode threads, ``per_request`` headers at a time, never on
        the event loop: reading a header can cost as much as decoding (PIL inflates up to 64 MB of
        a PNG's text chunks, walks every JPEG marker in Python: a 65 KB PNG 0.23 s, 4 MB of empty
        JPEG comments 2.5 s), and a request of such images held every other client before."""
        loop = asyncio.get_running_loop()
        for start in range(0, len(uploads), self.per_request):
            if await request.is_disconnected():
                raise ClientLeft()
            await asyncio.gather(*(loop.run_in_executor(self.pool, check_cost, u, min_side, max_pixels)
                                   for u in uploads[start:start + self.per_request]))
        check_budget(uploads, max_request_pixels)

    async def decode_all(self, request, predictor, uploads: list[Upload], max_pixels: int | None = None) -> None:
        """Decode every upload without an error yet into its ``row`` (or ``error``), at most
        ``per_request`` at a time; raises :class:`ClientLeft` when the client disconnects."""
        todo = [u for u in uploads if u.error is None]
        for start in range(0, len(todo), self.per_request):
            if await request.is_disconnected():
                raise ClientLeft()
            chunk = todo[start:start + self.per_request]
            await asyncio.gather(*(self._decode(predictor, u, max_pixels) for u in chunk))

    async def _decode(self, predictor, upload: Upload, max_pixels: int | None) -> None:
        loop = asyncio.get_running_loop()
        if self._heavy is None:  # made on the serving loop
            self._heavy = asyncio.Semaphore(max(1, self.threads // 2))
        work = (self.pool, decode_upload, predictor, upload.data, upload.label, max_pixels)
        try:
            if upload.cost > HEAVY_PIXELS:
                async with self._heavy:
                    upload.row = await loop.run_in_executor(*work)
            else:
                upload.row = await loop.run_in_executor(*work)
            self.decoded += 1
        except ApiError as exc:
            upload.error = exc.message

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True)
