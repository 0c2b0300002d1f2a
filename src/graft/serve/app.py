"""``graft serve``'s ASGI app (FastAPI): predictions over HTTP with dynamic batching.

Endpoints: ``POST /v1/models/{name}/predict`` (multipart field ``file``, repeatable, or a raw
image body; ``?top_k=``, ``?tta=flip``), ``GET /v1/models``, ``GET /v1/models/{name}``,
``GET /health``, the preview page at ``/`` and OpenAPI docs at ``/docs``.

Bad input is answered 4xx with ``{"error": "<one line>"}``: 400 not an image / truncated /
too many pixels / an empty or malformed request, 404 an unknown model, 413 a body over the
limit, 422 a bad ``top_k`` or ``tta``. Images are decoded by graft's own rules
(:func:`graft.data.decode.load_image`), so the answers are those of ``graft predict``.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import tempfile
from typing import Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from graft.errors import ImageDecodeError
from graft.serve.batcher import DynamicBatcher
from graft.serve.page import preview_page
from graft.serve.settings import ServeSettings

_SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class ApiError(Exception):
    """A request graft will not answer: HTTP ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes gets 413, whether its Content-Length says so
    up front or a chunked body grows past it while being read."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _too_large(self.limit)(scope, receive, send)
        seen, started = 0, False

        async def counted_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _BodyTooLarge()
            return message

        async def watched_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except _BodyTooLarge:
            if not started:
                await _too_large(self.limit)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"error": f"request body too large: the limit is {limit} bytes"}, status_code=413)


def decode_upload(predictor, data: bytes, label: str) -> np.ndarray:
    """Image bytes -> the predictor's input row, by graft's decoding rules (through a file in
    memory-backed /dev/shm where there is one, since those rules read files)."""
    if not data:
        raise ApiError(400, f"{label}: empty file (0 bytes)")
    try:
        try:
            return _decode_via_file(predictor, data, _SCRATCH)
        except OSError:  # a full /dev/shm (containers often give it 64 MB): the system temp folder
            if _SCRATCH is None:
                raise
            return _decode_via_file(predictor, data, None)
    except ImageDecodeError as exc:
        raise ApiError(400, f"{label}: {exc.reason}") from None
    except (ArithmeticError, LookupError, TypeError, ValueError, MemoryError) as exc:
        # a decoder failing in a way graft's rules do not name: still the upload's fault, not a 500
        raise ApiError(400, f"{label}: cannot be decoded ({type(exc).__name__}: {exc})") from None


def _decode_via_file(predictor, data: bytes, folder: str | None) -> np.ndarray:
    with tempfile.NamedTemporaryFile(dir=folder, prefix="graft-upload-") as tmp:
        tmp.write(data)
        tmp.flush()
        return predictor.decode(tmp.name)


async def _uploads(request: Request, settings: ServeSettings) -> list[tuple[str, bytes]]:
    """(label, bytes) of each image in the request: multipart ``file`` fields or the raw body."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_files=settings.max_images, max_fields=settings.max_images)
        items = [value for key, value in form.multi_items() if key == "file"]
        if not items:
            raise ApiError(400, "no 'file' field in the form: send each image as a multipart field named 'file'")
        if any(isinstance(item, str) for item in items):
            raise ApiError(400, "the 'file' field must be a file upload, not text")
        return [(item.filename or f"file {i + 1}", await item.read()) for i, item in enumerate(items)]
    body = await request.body()
    if not body:
        raise ApiError(400, "empty request: send an image as the body, or as multipart fields named 'file'")
    return [("body", body)]


def _rows(predictor, uploads) -> np.ndarray:
    return np.stack([decode_upload(predictor, data, label) for label, data in uploads])


def _answer(predictor, labels, result, top_k: int) -> list[dict]:
    probabilities, novelty, unfamiliar = result
    answers = []
    for i, label in enumerate(labels):
        tops = predictor.top(probabilities[i], top_k)
        listed = {task: [{"class": c, "probability": p} for c, p in top] for task, top in tops.items()}
        row = {"file": label, **({"top": listed[None]} if None in listed else {"tasks": listed})}
        row["novelty"] = None if novelty is None else round(float(novelty[i]), 4)
        row["unfamiliar"] = None if unfamiliar is None else bool(unfamiliar[i])
        answers.append(row)
    return answers


_PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "image/*": {"schema": {"type": "string", "format": "binary"}}}}}


def create_app(predictors: dict, settings: ServeSettings | None = None) -> FastAPI:
    """The app serving ``predictors`` (name -> :class:`~graft.serve.onnx_predictor.OnnxPredictor`)."""
    settings = settings or ServeSettings()
    batchers = {name: DynamicBatcher(p, settings.max_batch, settings.max_wait_ms / 1000)
                for name, p in predictors.items()}
    # A few decode threads, not one per waiting request: more only contend for the cores and
    # each keeps its own malloc arena of image buffers (RSS).
    decoders = concurrent.futures.ThreadPoolExecutor(settings.decode_threads or os.cpu_count() or 1,
                                                     thread_name_prefix="graft-decode")

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        for batcher in batchers.values():
            batcher.start()
        yield
        for batcher in batchers.values():
            await batcher.stop()
        decoders.shutdown(wait=True)

    app = FastAPI(title="graft serve", version="1", lifespan=lifespan,
                  description="Image classifiers trained with graft: top-k classes, novelty, metadata.")
    app.state.batchers = batchers
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    _add_error_handlers(app)

    def predictor_of(name: str):
        if name not in predictors:
            raise ApiError(404, f"unknown model {name!r}; served: {', '.join(sorted(predictors))}")
        return predictors[name]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return preview_page()

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": sorted(predictors)}

    @app.get("/v1/models")
    async def models():
        return [{"name": name, "version": p.version, "classes": p.classes} for name, p in sorted(predictors.items())]

    @app.get("/v1/models/{name}")
    async def model(name: str):
        return {"name": name, **predictor_of(name).describe()}

    @app.post("/v1/models/{name}/predict", openapi_extra=_PREDICT_BODY)
    async def predict(name: str, request: Request,
                      top_k: int = Query(settings.default_top_k, ge=1, le=10000, description="classes per image"),
                      tta: Literal["none", "flip"] = Query("none", description="flip: average with the mirror")):
        """Top-k classes (per task for a multi-task model), novelty and unfamiliar for each image."""
        predictor = predictor_of(name)
        uploads = await _uploads(request, settings)
        if len(uploads) > settings.max_images:
            raise ApiError(400, f"{len(uploads)} images in one request: the limit is {settings.max_images}")
        rows = await asyncio.get_running_loop().run_in_executor(decoders, _rows, predictor, uploads)
        result = await batchers[name].submit(rows, None if tta == "none" else tta)
        return {"model": name, "version": predictor.version,
                "predictions": _answer(predictor, [label for label, _ in uploads], result, top_k)}

    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
                             for e in exc.errors())
        return JSONResponse({"error": problems}, status_code=422)
