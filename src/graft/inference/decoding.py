"""Images -> the network's input rows, by graft's rules, from a path or from bytes, in a bounded window.

:func:`decode_row` reads a file's path, its bytes or a binary file object alike
(:func:`graft.data.decode.load_image`: only the allow-listed raster formats, the pixel limit,
JPEG draft decoding), so ``graft serve`` decodes uploads from memory and ``graft predict`` /
``evaluate`` decode files by the same code. :func:`decoded_rows` decodes many files on a few
threads with at most ``window`` decoded images held at a time, so memory does not grow with
the number of files.
"""
from __future__ import annotations

import collections
import concurrent.futures
import os
from collections.abc import Callable, Iterator

import numpy as np

from graft.data.decode import load_image
from graft.data.preprocess import Preprocessing
from graft.errors import ImageDecodeError

DECODE_THREADS = 4  # at most; never more than the cores


def decode_row(source, preprocessing: Preprocessing, input_type: str = "float",
               max_pixels: int | None = None) -> np.ndarray:
    """One image (a path, its bytes, or a binary file object) -> one input row: float32
    (3, S, S) normalised, or uint8 (S, S, 3) cropped RGB for an ``input_type="uint8"`` export.

    ``max_pixels``: :func:`~graft.data.decode.load_image`'s limit (None: its default). Raises
    :class:`~graft.errors.ImageDecodeError` naming the file and the problem."""
    image = load_image(source, min_side=preprocessing.resize_size, max_pixels=max_pixels)
    if input_type == "uint8":
        return np.asarray(preprocessing.resize_and_crop(image), dtype=np.uint8)
    return preprocessing.to_array(image)


def mirrored(rows: np.ndarray, input_type: str = "float") -> np.ndarray:
    """The horizontal mirror of a batch of input rows (the width axis of either layout)."""
    return np.ascontiguousarray(rows[:, :, ::-1, :] if input_type == "uint8" else rows[:, :, :, ::-1])


def decoded_rows(paths: list[str], decode: Callable, window: int) -> Iterator[tuple[str, np.ndarray | None,
                                                                                      ImageDecodeError | None]]:
    """``(path, row, None)`` or ``(path, None, error)`` for each path, in the order given.

    ``decode(path) -> row`` runs on up to :data:`DECODE_THREADS` threads; at most ``window``
    decodes are submitted or held at a time (the bound on memory). Closing the iterator early
    (an error raised by the caller) cancels what was not started."""
    workers = max(1, min(DECODE_THREADS, os.cpu_count() or 1, len(paths)))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        pending: collections.deque = collections.deque()
        queue = iter(paths)
        try:
            for path in queue:
                pending.append((path, pool.submit(decode, path)))
                if len(pending) >= window:
                    break
            while pending:
                path, future = pending.popleft()
                nxt = next(queue, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(decode, nxt)))
                try:
                    yield path, future.result(), None
                except ImageDecodeError as exc:
                    yield path, None, exc
        finally:
            for _, future in pending:
                future.cancel()
