"""``graft serve``'s ASGI app (FastAPI): predictions over HTTP with dynamic batching.

Endpoints: ``POST /v1/models/{name}/predict`` (multipart field ``file``, repeatable, or a raw
image body; ``?top_k=``, ``?tta=flip``), ``GET /v1/models``, ``GET /v1/models/{name}``,
``GET /health``, the preview page at ``/`` and OpenAPI docs at ``/docs`` and ``/redoc`` (their
scripts and styles served from the ``fastapi-offline`` package: nothing is fetched from
outside). Requests whose Host header is not one of the server's names get 400
(:mod:`graft.serve.hosts`: a web page elsewhere cannot reach the server by DNS rebinding).

Each file of a predict request is answered in its own row, ``top`` (``tasks`` for a multi-task
model) or ``error``, as ``graft predict --json``: 200 when at least one image was read, 400
(with the rows) when none was. Other bad input is answered 4xx with ``{"error": "<one line>"}``:
400 an empty or malformed request, 404 an unknown model, 408 a body not received within
``read_timeout_s`` (the connection is closed), 413 a body over ``max_body_bytes`` or images
costing more than ``max_request_pixels`` to decode (:mod:`graft.serve.uploads`), 422 a bad
``top_k`` or ``tta``; 503 beyond ``max_connections`` (:mod:`graft.serve.connections`). Images
are decoded by graft's own rules (:func:`graft.data.decode.load_image`), so the answers are those of ``graft predict``.
"""
from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager
from typing import Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from graft.serve.batcher import DynamicBatcher
from graft.serve.hosts import HostCheck
from graft.serve.models import ServedModel
from graft.serve.page import preview_page
from graft.serve.settings import ServeSettings
from graft.serve.uploads import ApiError, ClientLeft, FairDecoder, read_uploads

__all__ = ["ApiError", "BodyLimit", "create_app"]


class BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes gets 413, whether its Content-Length says so
    up front or a chunked body grows past it while being read; a body not all received within
    ``timeout`` seconds of its request's headers gets 408 and its connection is closed (a client
    that sends part of a body and stalls would hold that part in memory for as long as it liked)."""

    def __init__(self, app, limit: int, timeout: float | None = None):
        self.app = app
        self.limit = limit
        self.timeout = timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _too_large(self.limit)(scope, receive, send)
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else loop.time() + self.timeout
        seen, started, complete, over = 0, False, False, False

        async def counted_receive():
            nonlocal seen, complete, over
            if complete or deadline is None:  # after the body: waiting for a disconnect is not timed
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise _BodyLate() from None
            seen += len(message.get("body", b""))
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            if seen > self.limit:
                over = True
                raise _BodyTooLarge()
            return message

        async def watched_send(message):
            nonlocal started
            if over:  # a form parser that caught the cut body answers 400 of its own: the answer is 413
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _too_large(self.limit)(scope, receive, send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except _BodyTooLarge:
            if not started:
                await _too_large(self.limit)(scope, receive, send)
        except _BodyLate:
            if not started:
                await _too_late(self.timeout)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


class _BodyLate(Exception):
    pass


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"error": f"request body too large: the limit is {limit} bytes"}, status_code=413)


def _too_late(timeout: float) -> JSONResponse:
    # Connection: close makes uvicorn close the connection after the answer instead of waiting
    # for the rest of the body.
    return JSONResponse({"error": f"request body not received within {timeout:g} s (--read-timeout-s)"},
                        status_code=408, headers={"Connection": "close"})


def _answer(predictor, uploads, result, top_k: int) -> list[dict]:
    """One row per upload, in request order: its top-k, novelty and unfamiliar, or its error."""
    probabilities, novelty, unfamiliar = result or (None, None, None)
    answers, i = [], 0
    for upload in uploads:
        if upload.row is None:
            answers.append({"file": upload.label, "error": upload.error})
            continue
        tops = predictor.top(probabilities[i], top_k)
        listed = {task: [{"class": c, "probability": p} for c, p in top] for task, top in tops.items()}
        row = {"file": upload.label, **({"top": listed[None]} if None in listed else {"tasks": listed})}
        row["novelty"] = None if novelty is None else round(float(novelty[i]), 4)
        row["unfamiliar"] = None if unfamiliar is None else bool(unfamiliar[i])
        answers.append(row)
        i += 1
    return answers


def _none_read(uploads) -> str:
    errors = [u.error for u in uploads]
    if len(errors) == 1:
        return errors[0]
    shown = "; ".join(errors[:3]) + (f"; and {len(errors) - 3} more" if len(errors) > 3 else "")
    return f"none of the {len(errors)} images could be read: {shown}"


_PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "image/*": {"schema": {"type": "string", "format": "binary"}}}}}


def create_app(predictors: dict, settings: ServeSettings | None = None) -> FastAPI:
    """The app serving ``predictors``: name -> :class:`~graft.serve.onnx_predictor.OnnxPredictor`
    (its metadata read now) or :class:`~graft.serve.models.ServedModel`.

    Requests must carry a Host header from ``settings.host_names()`` (a test client's
    ``base_url`` too: ``http://127.0.0.1``). ``app.state.batchers`` (name -> DynamicBatcher) and
    ``app.state.decoder`` (the :class:`~graft.serve.uploads.FairDecoder`) count the work done,
    for tests and benchmarks."""
    from fastapi_offline import FastAPIOffline

    settings = settings or ServeSettings()
    served = {name: p if isinstance(p, ServedModel) else ServedModel.of(name, p) for name, p in predictors.items()}
    batchers = {name: DynamicBatcher(s.predictor, settings.max_batch, settings.max_wait_ms / 1000)
                for name, s in served.items()}
    # A few decode threads, not one per waiting request: more only contend for the cores and
    # each keeps its own malloc arena of image buffers (RSS).
    decoder = FairDecoder(settings.decode_threads or os.cpu_count() or 1)

    @asynccontextmanager
    async def lifespan(app):
        for batcher in batchers.values():
            batcher.start()
        yield
        for batcher in batchers.values():
            await batcher.stop()
        decoder.shutdown()

    app = FastAPIOffline(title="graft serve", version="1", lifespan=lifespan,
                         swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from swagger.io
                         description="Image classifiers trained with graft: top-k classes, novelty, metadata.")
    app.state.batchers = batchers
    app.state.decoder = decoder
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, timeout=settings.read_timeout_s)
    app.add_middleware(HostCheck, allowed=settings.host_names())
    _add_error_handlers(app)

    def model_of(name: str) -> ServedModel:
        if name not in served:
            raise ApiError(404, f"unknown model {name!r}; served: {', '.join(sorted(served))}")
        return served[name]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return preview_page()

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": sorted(served)}

    @app.get("/v1/models")
    async def models():
        return [{"name": name, "version": s.predictor.version, "classes": s.predictor.classes}
                for name, s in sorted(served.items())]

    @app.get("/v1/models/{name}")
    async def model(name: str):
        """The model's metadata as loaded (no server paths); ``changed_on_disk`` when its files
        have changed since (the loaded model still answers)."""
        return model_of(name).describe()

    @app.post("/v1/models/{name}/predict", openapi_extra=_PREDICT_BODY)
    async def predict(name: str, request: Request,
                      top_k: int = Query(settings.default_top_k, ge=1, le=10000, description="classes per image"),
                      tta: Literal["none", "flip"] = Query("none", description="flip: average with the mirror")):
        """Top-k classes (per task for a multi-task model), novelty and unfamiliar for each image,
        or that image's error."""
        predictor = model_of(name).predictor
        try:
            uploads = await read_uploads(request, settings.max_images)
            await decoder.check_all(request, uploads, predictor.preprocessing.resize_size, settings.max_pixels,
                                    settings.max_request_pixels)
            await decoder.decode_all(request, predictor, uploads, settings.max_pixels)
            if await request.is_disconnected():  # left while its images decoded: not batched
                raise ClientLeft()
        except (ClientLeft, ClientDisconnect):
            decoder.dropped += 1
            return Response(status_code=499)  # nobody reads it (nginx's "client closed request")
        rows = [u.row for u in uploads if u.row is not None]
        if not rows:
            return JSONResponse({"error": _none_read(uploads), "predictions": _answer(predictor, uploads, None, 1)},
                                status_code=400)
        result = await batchers[name].submit(np.stack(rows), None if tta == "none" else tta)
        return {"model": name, "version": predictor.version,
                "predictions": _answer(predictor, uploads, result, top_k)}

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
