"""`graft serve`: the API answers what GraftModel.predict_paths answers, batches concurrent
requests without mixing their rows, answers bad requests 4xx, runs as a real server on
127.0.0.1, and its preview page works in a real Chromium."""
from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from graft.serve.app import create_app  # noqa: E402
from graft.serve.onnx_predictor import OnnxPredictor  # noqa: E402
from graft.serve.runner import load_predictor  # noqa: E402
from graft.serve.settings import ServeSettings  # noqa: E402


@pytest.fixture(scope="module")
def digits_run(digits_dir, tmp_path_factory):
    from graft.recipes.frozen import fit_frozen

    return fit_frozen(digits_dir, tmp_path_factory.mktemp("serve") / "digits", image_size=96, progress=False).run_dir


@pytest.fixture(scope="module")
def hymenoptera_run(hymenoptera_small, tmp_path_factory):
    from graft.recipes.frozen import fit_frozen

    train, val = hymenoptera_small
    return fit_frozen(train, tmp_path_factory.mktemp("serve") / "hymenoptera", val_dir=val, progress=False).run_dir


@pytest.fixture(scope="module")
def digits_app(digits_run):
    # exported in this process (torch is loaded here anyway); `graft serve` exports in a child
    app = create_app({"digits": OnnxPredictor.load(digits_run)}, ServeSettings(max_body_bytes=2_000_000))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


def _post(client, name, paths, **params):
    files = [("file", (Path(p).name, Path(p).read_bytes())) for p in paths]
    return client.post(f"/v1/models/{name}/predict", files=files, params=params)


def _probabilities(prediction, classes):
    scores = {t["class"]: t["probability"] for t in prediction["top"]}
    return np.array([scores[c] for c in classes])


def test_api_equals_predict_paths_on_digits(digits_app, digits_run, digits_dir):
    from graft.artifacts.model import GraftModel

    model = GraftModel.load(digits_run)
    paths = sorted(digits_dir.rglob("*.png"))[::9]
    for tta in ("none", "flip"):
        _, expected = model.predict_paths(paths, progress=False, tta=None if tta == "none" else tta)
        answer = _post(digits_app, "digits", paths, top_k=10, tta=tta)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model"] == "digits" and len(body["version"]) == 12
        got = np.stack([_probabilities(p, model.classes) for p in body["predictions"]])
        assert np.abs(got - expected).max() < 1e-4
        assert [p["file"] for p in body["predictions"]] == [p.name for p in paths]
        assert all(isinstance(p["novelty"], float) and isinstance(p["unfamiliar"], bool) for p in body["predictions"])
    raw = digits_app.post("/v1/models/digits/predict", content=paths[0].read_bytes(), params={"top_k": 2})
    assert raw.status_code == 200 and len(raw.json()["predictions"][0]["top"]) == 2


def test_api_equals_predict_paths_on_real_photos(hymenoptera_run, hymenoptera_small):
    from graft.artifacts.model import GraftModel

    _, val = hymenoptera_small
    paths = sorted(val.rglob("*.jpg"))
    _, expected = GraftModel.load(hymenoptera_run).predict_paths(paths, progress=False)
    with TestClient(create_app({"hym": OnnxPredictor.load(hymenoptera_run)}), base_url="http://127.0.0.1") as client:
        got = np.stack([_probabilities(p, ["ants", "bees"]) for p in _post(client, "hym", paths).json()["predictions"]])
        described = client.get("/v1/models/hym").json()
    assert np.abs(got - expected).max() < 1e-4
    assert described["classes"] == ["ants", "bees"] and described["validation"]["n_val"] == len(paths)
    assert described["input_recipe"]["resize_shorter_side"] == 256 and described["novelty"]["threshold"] > 0


def test_metadata_endpoints(digits_app):
    assert digits_app.get("/health").json() == {"status": "ok", "models": ["digits"]}
    listed = digits_app.get("/v1/models").json()
    assert [m["name"] for m in listed] == ["digits"] and len(listed[0]["classes"]) == 10
    detail = digits_app.get("/v1/models/digits").json()
    assert detail["training"]["method"] == "frozen-features" and detail["preprocessing"]["size"] == 96
    assert "/v1/models/{name}/predict" in digits_app.get("/openapi.json").json()["paths"]
    page = digits_app.get("/")
    assert page.status_code == 200 and "<input id=\"files\"" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no external assets


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels: a decompression bomb's signature."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_bad_requests_get_4xx_and_the_server_keeps_serving(digits_app, digits_dir):
    good = sorted(digits_dir.rglob("*.png"))[0].read_bytes()
    buffer = io.BytesIO()
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(buffer, "JPEG")
    truncated = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    url = "/v1/models/digits/predict"
    cases = {
        "not an image": (digits_app.post(url, content=b"hello, not a picture"), 400, "not an image"),
        "truncated": (digits_app.post(url, files=[("file", ("cut.jpg", truncated))]), 400, "cut.jpg: truncated"),
        "bomb": (digits_app.post(url, content=_png_header(30000, 30000)), 400, "too large"),
        "too large body": (digits_app.post(url, content=b"\0" * 2_100_000), 413, "body too large"),
        "unknown model": (digits_app.post("/v1/models/nope/predict", content=good), 404, "unknown model 'nope'"),
        "top_k 0": (digits_app.post(url, content=good, params={"top_k": 0}), 422, "top_k"),
        "top_k text": (digits_app.post(url, content=good, params={"top_k": "many"}), 422, "top_k"),
        "bad tta": (digits_app.post(url, content=good, params={"tta": "rotate"}), 422, "tta"),
        "empty": (digits_app.post(url, content=b""), 400, "empty request"),
        "form without file": (digits_app.post(url, files=[("image", ("a.png", good))]), 400, "no 'file' field"),
    }
    for name, (answer, status, words) in cases.items():
        assert answer.status_code == status, (name, answer.status_code, answer.text)
        assert words in answer.json()["error"], (name, answer.json())
    assert digits_app.post(url, content=good).status_code == 200


@contextlib.contextmanager
def running_server(app):
    """A real uvicorn server on 127.0.0.1 at a free port, in a thread; stopped on exit."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()
    assert not thread.is_alive()


def test_concurrent_requests_are_batched_and_each_gets_its_own_rows(digits_run, digits_dir):
    predictor = load_predictor(digits_run)
    paths = sorted(digits_dir.rglob("*.png"))[::4][:30]
    expected = predictor.predict_paths(paths).probabilities
    app = create_app({"digits": predictor}, ServeSettings(max_batch=16, max_wait_ms=40))

    with running_server(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        def ask(i):
            answer = client.post("/v1/models/digits/predict", content=paths[i].read_bytes(), params={"top_k": 10})
            assert answer.status_code == 200, answer.text
            return i, _probabilities(answer.json()["predictions"][0], predictor.classes)

        with ThreadPoolExecutor(max_workers=10) as pool:
            answers = list(pool.map(ask, range(len(paths))))
    for i, probabilities in answers:
        assert np.abs(probabilities - expected[i]).max() < 1e-4, paths[i]
    batcher = app.state.batchers["digits"]
    assert batcher.images == len(paths)
    assert batcher.batches < len(paths)  # requests did share ONNX Runtime runs


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_graft_serve_command_serves_and_stops_on_ctrl_c(digits_run, digits_dir):
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "graft", "serve", f"digits={digits_run}", "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, answer = time.monotonic() + 60, None
        while time.monotonic() < deadline and answer is None:
            with contextlib.suppress(httpx.HTTPError):
                answer = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            time.sleep(0.2)
        assert answer is not None and answer.json()["models"] == ["digits"]
        image = sorted(digits_dir.rglob("*.png"))[0]
        predicted = httpx.post(f"http://127.0.0.1:{port}/v1/models/digits/predict", content=image.read_bytes())
        assert predicted.status_code == 200
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert "http://127.0.0.1:" in output and "graft serve: stopped" in output
    assert f"  digits -> {Path(digits_run).resolve()}\n" in output  # each name -> its folder, at start
    assert "Traceback" not in output


def _chrome():
    if not (os.path.exists("/usr/bin/chromium") and os.path.exists("/usr/bin/chromedriver")):
        pytest.skip("Debian's chromium and chromium-driver are not installed (make system-packages)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1100,800"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def test_preview_page_in_chromium(hymenoptera_run, hymenoptera_small, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, val = hymenoptera_small
    image = sorted((val / "bees").glob("*.jpg"))[0]
    predictor = load_predictor(hymenoptera_run)
    expected = predictor.top(predictor.predict_paths([image]).probabilities[0], 1)[None][0][0]
    browser = _chrome()
    try:
        with running_server(create_app({"hym": predictor})) as base:
            browser.get(base + "/")
            WebDriverWait(browser, 20).until(lambda b: "ants" in b.find_element(By.ID, "classes").text)
            browser.find_element(By.ID, "files").send_keys(str(image))
            card = WebDriverWait(browser, 30).until(lambda b: b.find_element(By.CSS_SELECTOR, ".card.done"))
            shown = card.find_elements(By.CSS_SELECTOR, ".top-class")[0].text
            shot = Path(os.environ.get("GRAFT_SCREENSHOT_DIR", tmp_path)) / "preview.png"
            browser.save_screenshot(str(shot))
    finally:
        browser.quit()
    assert shown == expected and shown in ("ants", "bees")
    assert shot.stat().st_size > 10_000


def test_serving_imports_neither_torch_nor_timm(digits_app, digits_run, digits_dir):
    image = sorted(digits_dir.rglob("*.png"))[0]  # digits_app has exported model.onnx already
    code = ("import sys\nfrom fastapi.testclient import TestClient\nfrom graft.serve.app import create_app\n"
            "from graft.serve.runner import load_predictor\n"
            f"app = create_app({{'d': load_predictor({str(digits_run)!r})}})\n"
            "with TestClient(app, base_url='http://127.0.0.1') as client:\n"
            f"    answer = client.post('/v1/models/d/predict', content=open({str(image)!r}, 'rb').read())\n"
            "print(answer.status_code, sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "200 []", done.stdout
