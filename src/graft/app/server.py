"""``graft app``'s ASGI app (FastAPI): the pages and the few JSON calls they make.

Pages (``?p=`` names the project, relative to the root): ``/`` open a project, ``/data``,
``/train``, ``/results``, ``/try``, ``/ship``. Calls: ``POST /api/train``, ``/api/cancel``,
``GET /api/status``, ``POST /api/predict`` (multipart ``file``), ``POST /api/export``; files
under the root: ``/thumb`` (a small JPEG of an image), ``/file`` (a run's report.html, an
export). Every request must carry the app's token (``?token=`` once: it is then kept in a
cookie), else 403; every path must lie under the root, else one line on the page (403).
Bad input is answered ``{"error": "<one line>"}`` with a 4xx status and shown on the page.
"""
from __future__ import annotations

import hmac
import io
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from graft.app import advice, decisions, training, unlabelled
from graft.app.projects import AppError, add_photos, candidates, project_data, relative, state_folder, under_root
from graft.errors import GraftError
from graft.serve.app import BodyLimit
from graft.serve.hosts import HostCheck

COOKIE = "graft_app_token"
STEPS = (("data", "1 Data"), ("train", "2 Train"), ("results", "3 Results"), ("try", "4 Try it"),
         ("ship", "5 Ship it"))
MAX_UPLOAD = 50 * 1024 * 1024  # bytes of one image uploaded to Try it
# bytes of one request: every upload is read into memory, so a request's cost is bounded; the
# page sends added photos in batches under it (data.html's BATCH_BYTES), so any number can be added
MAX_REQUEST = 4 * MAX_UPLOAD


class TokenGuard:
    """ASGI middleware: 403 for a request whose ``token`` query parameter or cookie is not the
    app's; a right query token is stored in a cookie (as Jupyter does), so links need no token."""

    def __init__(self, app, token: str):
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        given = request.query_params.get("token")
        # a browser keeps one cookie per host whatever the port: one name per port (as Jupyter
        # does), else opening a second graft app locks the first one's tabs out
        name = f"{COOKIE}-{request.url.port or 80}"
        ok = any(value is not None and hmac.compare_digest(value, self.token)
                 for value in (given, request.cookies.get(name)))
        # SameSite=Strict does not stop a page of another port of this host (same site): a POST
        # from it would carry the cookie. A browser names the page that sends a POST in Origin.
        origin = request.headers.get("origin")
        if ok and request.method not in ("GET", "HEAD") and origin is not None and \
                origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
            answer = PlainTextResponse(f"403: a page of {origin} cannot act in graft app", status_code=403)
            return await answer(scope, receive, send)
        if not ok:
            answer = PlainTextResponse("403: this page needs the link graft app printed when it started "
                                       "(it carries a token)", status_code=403)
            return await answer(scope, receive, send)

        async def send_with_cookie(message):
            if message["type"] == "http.response.start" and given is not None:
                cookie = f"{name}={self.token}; Path=/; HttpOnly; SameSite=Strict".encode()
                message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie)]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def create_app(root, token: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> FastAPI:
    """The app for projects under ``root``, answering requests that carry ``token``."""
    root = Path(root).resolve()
    pages = Environment(loader=PackageLoader("graft.app", "templates"), autoescape=select_autoescape(["html"]))
    predictors: dict[Path, object] = {}
    app = FastAPI(title="graft app", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=MAX_REQUEST, timeout=120)  # inside the token check: 403 reads no body
    app.add_middleware(TokenGuard, token=token)
    app.add_middleware(HostCheck, allowed=hosts)  # a page elsewhere cannot reach the app by DNS rebinding
    app.state.root = root

    @app.exception_handler(AppError)
    async def bad_input(request: Request, exc: AppError):
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        return HTMLResponse(render("home.html", request, None, error=str(exc)), status_code=exc.status)

    @app.exception_handler(GraftError)
    async def graft_error(request: Request, exc: GraftError):
        return await bad_input(request, AppError(str(exc)))

    def render(name: str, request: Request, project: Path | None, **values) -> str:
        if name == "home.html":
            values.setdefault("projects", [relative(root, p) for p in candidates(root)])
        return pages.get_template(name).render(root=str(root), project=project and relative(root, project),
                                               project_name=project and project.name, steps=STEPS,
                                               step=name.removesuffix(".html"), **values)

    def project_of(p: str | None) -> Path:
        if not p:
            raise AppError("Choose a project first")
        project = under_root(root, p)
        if project == root:  # its runs would be written inside the photos it reads, or outside the root
            raise AppError(f"{root} is the folder graft app was started in: a project is a folder inside it (graft "
                           "writes the runs beside the project). Start graft app in the folder above: graft app "
                           f"--root {root.parent}")
        return project

    _add_pages(app, root, render, project_of)
    _add_api(app, root, project_of, predictors)
    _add_audit(app, project_of)
    _add_unlabelled(app, root, project_of)
    return app


def _add_pages(app: FastAPI, root: Path, render, project_of) -> None:
    @app.get("/", response_class=HTMLResponse)
    def home(request: Request, p: str | None = None):
        if p:  # "open" typed into the box: the guard's message on this page when it is outside
            return data(request, p)
        return render("home.html", request, None)

    @app.get("/data", response_class=HTMLResponse)
    def data(request: Request, p: str):
        project = project_of(p)
        summary = project_data(project)
        # a class folder may be a symlink leading out of the root: its photos get no /thumb link
        thumbs = {c.name: [t for t in (_inside(root, str(f)) for f in c.samples) if t] for c in summary.classes}
        found, total, audit_run = decisions.findings(project)
        for row in found:
            row["thumb"] = _inside(root, row["path"]) if row["image"] else None
        pool = unlabelled.default_pool(project)
        picked = [(path, _inside(root, path)) for path in unlabelled.picks(project)[0]]
        grouped = [{**g, "thumbs": [_inside(root, path) for path in g["shown"]]} for g in unlabelled.groups(project)]
        return render("data.html", request, project, data=summary, thumbs=thumbs, findings=found,
                      n_findings=total, audit=audit_run and relative(root, audit_run),
                      decided=len(decisions.read_decisions(project)), picks=picked, groups=grouped,
                      pool=relative(root, pool) if pool.is_dir() else "")

    @app.get("/train", response_class=HTMLResponse)
    def train_page(request: Request, p: str):
        project = project_of(p)
        return render("train.html", request, project, data=project_data(project))

    @app.get("/results", response_class=HTMLResponse)
    def results(request: Request, p: str):
        import json

        project = project_of(p)
        run = training.latest_model(project)
        metrics = json.loads((run / "metrics.json").read_text()) if run else None
        mistakes = [{**row, "thumb": _inside(root, row["path"])} for row in _mistakes(run)] if run else []
        return render("results.html", request, project, run=run and relative(root, run), metrics=metrics,
                      mistakes=mistakes)

    @app.get("/try", response_class=HTMLResponse)
    def try_page(request: Request, p: str):
        project = project_of(p)
        return render("try.html", request, project, run=training.latest_model(project))

    @app.get("/ship", response_class=HTMLResponse)
    def ship(request: Request, p: str):
        project = project_of(p)
        run = training.latest_model(project)
        return render("ship.html", request, project, run=run and str(run))


def _add_api(app: FastAPI, root: Path, project_of, predictors: dict) -> None:  # noqa: C901 -- one route each
    @app.post("/api/train")
    def train(p: str = Query(...), how: Literal["fit", "finetune"] = "fit"):
        project = project_of(p)
        summary = project_data(project)
        if summary.problems:
            raise AppError(summary.problems[0])
        exclude = state_folder(project, "exclude.csv")
        return {"run": training.start(project, exclude if exclude.exists() else None, recipe=how)}

    @app.post("/api/resume")
    def resume(p: str = Query(...)):
        return {"run": training.resume(project_of(p))}

    @app.post("/api/add")
    def add(p: str = Query(...), cls: str = Form(""), file: list[UploadFile] = File(...)):
        project = project_of(p)
        uploads = [(f.filename, f.file.read(MAX_UPLOAD + 1)) for f in file]
        too_big = [name for name, content in uploads if len(content) > MAX_UPLOAD]
        if too_big:
            raise AppError(f"{too_big[0]} is larger than {MAX_UPLOAD // 2**20} MB: nothing was added", 413)
        written, refused = add_photos(project, cls, uploads)
        return {"class": cls.strip(), "added": written, "refused": refused}

    @app.post("/api/predict")
    def predict(p: str = Query(...), file: UploadFile = File(...)):
        project = project_of(p)
        run = training.latest_model(project)
        if run is None:
            raise AppError("Train a model first (step 2): this project has none yet")
        content = file.file.read(MAX_UPLOAD + 1)
        if len(content) > MAX_UPLOAD:
            raise AppError(f"{file.filename} is larger than {MAX_UPLOAD // 2**20} MB", 413)
        predictor = _predictor(predictors, run)
        try:
            row = predictor.decode(content)
        except GraftError as exc:
            reason = str(exc).removeprefix("<bytes>: ")
            raise AppError(f"{file.filename} is not an image graft can read: {reason}", 415) from None
        probabilities, novelty, unfamiliar = predictor.run(row[None])
        top = predictor.top(probabilities[0], 5)[None]
        return {"file": file.filename, "run": run.name,
                "top": [{"class": c, "probability": round(q, 4)} for c, q in top],
                "unfamiliar": None if unfamiliar is None else bool(unfamiliar[0]),
                "novelty": None if novelty is None else round(float(novelty[0]), 3)}

    @app.post("/api/export")
    def export(p: str = Query(...)):
        from graft.artifacts.export import export_model
        from graft.inference import current_export
        from graft.recipes.settings import ExportConfig

        project = project_of(p)
        run = training.latest_model(project)
        if run is None:
            raise AppError("Train a model first (step 2): there is nothing to export yet")
        onnx = run / "model.onnx"
        try:  # written by `graft export` when training finished, and still the model's: nothing to redo
            current_export(run, threads=1, export=False)
            lines = ["exported when training finished, checked against the trained model"]
        except GraftError:
            lines = export_model(ExportConfig(run_dir=str(run), format="onnx"))
            predictors.pop(run, None)  # model.onnx was rewritten: load it again
        return {"path": str(onnx), "file": relative(root, onnx), "bytes": onnx.stat().st_size, "lines": lines,
                "command": f"graft export {run} --format onnx"}

    @app.get("/thumb")
    def thumb(path: str):
        from graft.data.decode import load_image

        image_path = under_root(root, path)
        try:
            image = load_image(image_path, min_side=128)
        except GraftError as exc:
            return PlainTextResponse(str(exc), status_code=415)
        image.thumbnail((128, 128))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=80)
        return Response(buffer.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/file")
    def file(path: str):
        target = under_root(root, path)
        if not target.is_file():
            raise AppError(f"{path} is not a file")
        inline = target.suffix in (".html", ".png", ".jpg")
        # any file under the root can be asked for: an HTML page there (a dataset's, a download's) must
        # not run scripts as the app (they would carry its cookie to /api/): sandboxed, they run in an origin
        # of their own (report.html sorts its tables), and a call to /api/ goes without the cookie
        sandbox = {"Content-Security-Policy": "sandbox allow-scripts", "X-Content-Type-Options": "nosniff"}
        return FileResponse(target, filename=None if inline else target.name, headers=sandbox)


def _add_audit(app: FastAPI, project_of) -> None:
    @app.post("/api/advise")
    def advise(p: str = Query(...)):
        project = project_of(p)
        summary = project_data(project)
        if summary.problems:
            raise AppError(summary.problems[0])
        advice.start(project)
        return advice.status(project)

    @app.get("/api/advice")
    def advice_status(p: str = Query(...)):
        return advice.status(project_of(p))

    @app.post("/api/audit")
    def audit(p: str = Query(...)):
        project = project_of(p)
        summary = project_data(project)
        if summary.problems:
            raise AppError(summary.problems[0])
        return {"run": training.start(project, kind="audit")}

    @app.post("/api/cancel")
    def cancel(p: str = Query(...), kind: Literal["run", "audit", "select", "cluster"] = "run"):
        return {"run": training.cancel(project_of(p), kind)}

    @app.get("/api/status")
    def status(p: str = Query(...), kind: Literal["run", "audit", "select", "cluster"] = "run"):
        return training.status(project_of(p), kind=kind).as_dict()

    @app.post("/api/decide")
    def decide(p: str = Query(...), path: str = Form(...), relabel: str = Form(""), issue: str = Form("")):
        return decisions.decide(project_of(p), path, relabel, issue)

    @app.post("/api/undo")
    def undo(p: str = Query(...), path: str = Form(...)):
        decisions.undo(project_of(p), path)
        return {"path": path}


def _add_unlabelled(app: FastAPI, root: Path, project_of) -> None:
    @app.post("/api/select")
    def select(p: str = Query(...), pool: str = Form(...)):
        project = project_of(p)
        summary = project_data(project)
        if summary.problems:
            raise AppError(summary.problems[0])
        return {"run": unlabelled.start(project, under_root(root, pool))}

    @app.post("/api/cluster")
    def cluster(p: str = Query(...), pool: str = Form(...)):
        return {"run": unlabelled.start(project_of(p), under_root(root, pool), kind="cluster")}

    @app.post("/api/name-group")
    def name_group(p: str = Query(...), cluster: str = Form(...), cls: str = Form(...)):
        copied, refused = unlabelled.file_group(project_of(p), root, cluster, cls)
        return {"copied": copied, "refused": refused, "class": cls}

    @app.post("/api/file")
    def file_photo(p: str = Query(...), path: str = Form(...), cls: str = Form(...)):
        return {"added": unlabelled.file_photo(project_of(p), root, path, cls), "class": cls}


def _mistakes(run: Path, most: int = 12) -> list[dict]:
    """The validation photos the model got wrong (RUN/predictions.csv), the surest mistakes first."""
    import csv

    try:
        with open(run / "predictions.csv", newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.DictReader(handle) if row.get("split", "val") == "val" and row["correct"] == "0"]
    except OSError:
        return []
    return sorted(rows, key=lambda row: -float(row["probability"]))[:most]


def _inside(root: Path, path: str) -> str | None:
    """``path`` relative to ``root`` for a /thumb link, or None when it lies outside."""
    try:
        return relative(root, Path(path).resolve())
    except ValueError:
        return None


def _predictor(cache: dict, run: Path):
    """The run's Predictor on ONNX Runtime (exported in a child process the first time, as
    ``graft serve`` does), kept for the next upload."""
    if run not in cache:
        from graft.serve.runner import load_predictor

        cache.clear()  # one model at a time: the newest run of the project in use
        cache[run] = load_predictor(run)
    return cache[run]
