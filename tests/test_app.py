"""graft app without a browser: the token, the root guard and bad input, on the real app (TestClient)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from fastapi.testclient import TestClient  # noqa: E402

from graft.app import training  # noqa: E402
from graft.app.projects import state_folder  # noqa: E402
from graft.app.server import create_app  # noqa: E402
from graft.artifacts.run_folder import RunLock  # noqa: E402

TOKEN = "test-token-123"


@pytest.fixture
def root(tmp_path, digits_dir) -> Path:
    """A root with one project of real digits (3 classes, 4 images each) and a file outside it."""
    project = tmp_path / "root" / "digits"
    for name in ("0", "1", "2"):
        (project / name).mkdir(parents=True)
        for image in sorted((digits_dir / name).glob("*.png"))[:4]:
            shutil.copy2(image, project / name / image.name)
    (tmp_path / "secret.txt").write_text("not for the page")
    return tmp_path / "root"


@pytest.fixture
def client(root):
    with TestClient(create_app(root, TOKEN), base_url="http://127.0.0.1") as c:
        yield c


def test_every_request_needs_the_token_then_the_cookie_carries_it(root):
    with TestClient(create_app(root, TOKEN), base_url="http://127.0.0.1") as c:
        for path in ("/", "/data?p=digits", "/api/status?p=digits", "/thumb?path=digits/0"):
            assert c.get(path).status_code == 403, path
        assert c.get("/?token=wrong").status_code == 403
        assert c.post("/api/train?p=digits").status_code == 403  # nothing started without it
        assert not state_folder(root / "digits").exists()
        first = c.get(f"/?token={TOKEN}")
        assert first.status_code == 200 and "digits" in first.text
        assert "HttpOnly" in first.headers["set-cookie"]
        assert c.get("/data?p=digits").status_code == 200  # the cookie alone from now on
    with TestClient(create_app(root, TOKEN), base_url="http://evil.example") as c:
        assert c.get(f"/?token={TOKEN}").status_code == 400  # DNS rebinding: a foreign Host header


def test_a_second_app_on_another_port_does_not_lock_the_first_one_out(root):
    """A browser keeps one cookie jar per host, not per port: each app's cookie has its own name."""
    first = TestClient(create_app(root, TOKEN), base_url="http://127.0.0.1:8001")
    second = TestClient(create_app(root, "other-token"), base_url="http://127.0.0.1:8002")
    with first, second:
        assert first.get(f"/?token={TOKEN}").status_code == 200
        assert second.get("/?token=other-token").status_code == 200
        first.cookies.update(second.cookies)  # what the browser holds for 127.0.0.1 now
        second.cookies.update(first.cookies)
        assert first.get("/data?p=digits").status_code == 200
        assert second.get("/data?p=digits").status_code == 200

def test_a_post_from_a_page_of_another_local_port_is_refused(client, root):
    """Cookies are sent to 127.0.0.1:PORT from any page of 127.0.0.1 (same site whatever the port)."""
    client.get(f"/?token={TOKEN}")
    foreign = client.post("/api/train?p=digits", headers={"Origin": "http://127.0.0.1:9999"})
    assert foreign.status_code == 403 and "a page of http://127.0.0.1:9999 cannot act" in foreign.text
    assert not state_folder(root / "digits", "app").exists()  # nothing started
    own = client.post("/api/cancel?p=digits", headers={"Origin": "http://127.0.0.1"})  # the app's own page
    assert own.status_code == 409 and own.json()["error"] == "Nothing is training in this project"

def test_the_data_page_lists_classes_counts_and_thumbnails(client):
    page = client.get(f"/data?p=digits&token={TOKEN}").text
    assert "3 classes, 12 photos" in page and page.count("4 photos") == 3
    thumb = client.get("/thumb?path=digits/0/" + sorted(os.listdir(client.app.state.root / "digits" / "0"))[0])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content[:2] == b"\xff\xd8"


@pytest.mark.parametrize("path", ["..", "../secret.txt", "/etc", "digits/../../secret.txt", "link"])
def test_a_path_outside_the_root_gets_one_message(client, root, path):
    (root / "link").symlink_to(root.parent)  # a symlink inside the root leading out of it
    client.get(f"/?token={TOKEN}")
    page = client.get("/data", params={"p": path})
    assert page.status_code == 403
    assert f"{path} is outside the folder graft app was started in ({root.resolve()})" in page.text
    assert client.get("/file", params={"path": path}).status_code == 403
    answer = client.post("/api/train", params={"p": path})
    assert answer.status_code == 403 and "is outside the folder" in answer.json()["error"]


def test_an_html_file_under_the_root_is_served_without_its_scripts(client, root):
    (root / "page.html").write_text("<script>fetch('/api/train?p=digits', {method: 'POST'})</script>")
    client.get(f"/?token={TOKEN}")
    answer = client.get("/file", params={"path": "page.html"})
    assert answer.status_code == 200 and "<script>" in answer.text
    assert answer.headers["content-security-policy"] == "sandbox allow-scripts"  # in an origin of its own

def test_a_class_folder_linked_out_of_the_root_shows_its_count_and_no_thumbnail(client, root, digits_dir):
    outside = root.parent / "outside"
    outside.mkdir()
    shutil.copy2(sorted((digits_dir / "9").glob("*.png"))[0], outside / "nine.png")
    (root / "digits" / "9").symlink_to(outside)
    page = client.get(f"/data?p=digits&token={TOKEN}")
    assert page.status_code == 200 and "4 classes, 13 photos" in page.text  # was a 500
    assert "nine.png" not in page.text

def test_photos_are_never_added_through_a_class_folder_linked_out_of_the_root(client, root, digits_dir):
    outside = root.parent / "outside"
    outside.mkdir()
    (root / "digits" / "9").symlink_to(outside)
    photo = sorted((digits_dir / "9").glob("*.png"))[0]
    answer = client.post(f"/api/add?p=digits&token={TOKEN}", data={"cls": "9"},
                         files=[("file", (photo.name, photo.read_bytes(), "image/png"))])
    assert answer.status_code == 400 and "is a link to" in answer.json()["error"]
    assert list(outside.iterdir()) == []  # nothing written outside the root

def test_an_empty_class_is_named_and_training_is_refused_before_anything_runs(client, root):
    (root / "digits" / "3").mkdir()
    page = client.get(f"/data?p=digits&token={TOKEN}").text
    assert "class &#39;3&#39; has no images" in page
    answer = client.post("/api/train?p=digits")
    assert answer.status_code == 400
    assert answer.json()["error"] == "class '3' has no images: add some, or remove its folder, before training"
    assert training.runs(root / "digits") == []


def test_the_root_itself_is_not_a_project(client, root):
    answer = client.post(f"/api/train?p=.&token={TOKEN}")
    assert answer.status_code == 400 and "is the folder graft app was started in" in answer.json()["error"]


def test_training_held_by_another_process_is_refused_with_the_run_lock_message(client, root):
    """A run of the project whose folder another process holds (graft fit from a terminal, another app)."""
    project = root / "digits"
    busy = state_folder(project, "runs", "run-busy")
    busy.mkdir(parents=True)
    state_folder(project, "app").mkdir()
    state_folder(project, "app", "run-busy.log").write_text("")
    with RunLock(busy, "fit"):
        answer = client.post(f"/api/train?p=digits&token={TOKEN}")
    assert answer.status_code == 409
    assert answer.json()["error"].startswith("This project is training already (run-busy): ")
    assert "is in use by another graft process: pid" in answer.json()["error"]
    assert training.runs(project) == ["run-busy"]  # no second run was started


def test_a_second_train_is_refused_and_cancel_stops_the_first_keeping_every_photo(client, root):
    project = root / "digits"
    photos = sorted(p.relative_to(project) for p in project.rglob("*.png"))
    # a fine-tune, not a fit: a fit of 12 digits can finish (and be exporting its ONNX file) before the
    # cancel arrives on a loaded machine, and a finished model is rightly "done" (seen once at load 5)
    first = client.post(f"/api/train?p=digits&how=finetune&token={TOKEN}")
    assert first.status_code == 200
    second = client.post("/api/train?p=digits")  # another tab
    assert second.status_code == 409 and second.json()["error"].startswith("This project is training already")
    assert client.get("/api/status?p=digits").json()["state"] == "running"
    assert client.post("/api/cancel?p=digits").json()["run"] == first.json()["run"]
    deadline = time.monotonic() + 60
    while client.get("/api/status?p=digits").json()["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    status = client.get("/api/status?p=digits").json()
    assert status["state"] == "cancelled" and status["message"].startswith("Cancelled")
    assert sorted(p.relative_to(project) for p in project.rglob("*.png")) == photos
    assert client.post("/api/cancel?p=digits").status_code == 409  # nothing is training now


def test_cancel_works_when_the_app_was_started_with_sigint_ignored(client, root):
    # as under `nohup graft app &`: the app, and so each job it starts, inherits SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _cancel_at_once(client, root)
    finally:
        signal.signal(signal.SIGINT, previous)


def _cancel_at_once(client, root) -> None:
    first = client.post(f"/api/train?p=digits&how=finetune&token={TOKEN}")
    assert first.status_code == 200
    # at once: while the job's Python still starts (its SIGINT is lost then) or once it runs graft's code
    assert client.post("/api/cancel?p=digits").json()["run"] == first.json()["run"]
    deadline = time.monotonic() + 120
    while client.get("/api/status?p=digits").json()["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.get("/api/status?p=digits").json()["state"] == "cancelled"


def test_a_decision_is_a_row_of_exclude_csv_and_never_touches_a_photo(client, root):
    project = root / "digits"
    photo = str(sorted((project / "1").glob("*.png"))[0])
    client.get(f"/?token={TOKEN}")
    assert client.post("/api/decide?p=digits", data={"path": photo, "relabel": "7"}).json() == {
        "error": "'7' is not a class of digits (0, 1, 2)"}
    outside = client.post("/api/decide?p=digits", data={"path": str(root.parent / "secret.txt")})
    assert outside.status_code == 400 and outside.json()["error"].endswith("is not a photo of digits")
    answer = client.post("/api/decide?p=digits", data={"path": photo, "relabel": "2", "issue": "label"})
    assert answer.status_code == 200
    csv_file = state_folder(project, "exclude.csv")
    assert csv_file.read_text() == f"path,relabel,issue\n{photo},2,label\n"
    from graft.data.decisions import read_decisions

    assert read_decisions(csv_file).relabel == {os.path.realpath(photo): "2"}  # what graft fit --exclude reads
    client.post("/api/undo?p=digits", data={"path": photo})
    assert csv_file.read_text() == "path,relabel,issue\n" and Path(photo).exists()


def test_the_advisor_answers_in_words_and_trains_nothing(client, root):
    """The real `graft advise --json` in a child process, read back as sentences."""
    project = root / "digits"
    first = client.post(f"/api/advise?p=digits&token={TOKEN}")
    assert first.status_code == 200 and first.json()["state"] == "running"
    assert client.post("/api/advise?p=digits").status_code == 409  # still measuring
    deadline = time.monotonic() + 240
    while (answer := client.get("/api/advice?p=digits").json())["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert answer["state"] == "done", answer
    saved = json.loads(state_folder(project, "advice.json").read_text())
    assert answer["words"][0] == f"{saved['n_images']} photos to learn from, about 3 per class: a small project."
    assert "graft recommends" in answer["words"][-1]
    assert answer["command"].startswith("graft ") and str(project) in answer["command"]
    assert training.runs(project, None) == [] and not state_folder(project, "runs").exists()


def test_photos_added_from_the_page_are_copied_and_a_non_image_is_refused(client, root, digits_dir):
    project = root / "digits"
    photo = sorted((digits_dir / "5").glob("*.png"))[0]
    before = {p.name: p.read_bytes() for p in (project / "0").iterdir()}
    taken = sorted((project / "0").iterdir())[0]  # a name the class has already
    files = [("file", (photo.name, photo.read_bytes(), "image/png")),
             ("file", ("notes.jpg", b"milk, eggs", "image/jpeg")),
             ("file", (taken.name, photo.read_bytes(), "image/png"))]
    answer = client.post(f"/api/add?p=digits&token={TOKEN}", data={"cls": "0"}, files=files)
    assert answer.status_code == 200
    assert answer.json()["refused"] == ["notes.jpg was not added: not an image (unrecognised format)"]
    assert len(answer.json()["added"]) == 2 and not (project / "0" / "notes.jpg").exists()
    assert not set(answer.json()["added"]) & set(before) and answer.json()["added"][1].startswith(f"{taken.stem}-")
    assert {p.name: p.read_bytes() for p in (project / "0").iterdir() if p.name in before} == before  # none replaced
    new_class = client.post("/api/add?p=digits", data={"cls": "5"}, files=files[:1])
    assert new_class.json()["added"] == [photo.name] and (project / "5" / photo.name).read_bytes() == photo.read_bytes()
    for bad in ("../escape", ".hidden", ""):
        refused = client.post("/api/add?p=digits", data={"cls": bad}, files=files[:1])
        assert refused.status_code in (400, 422) and not (root / "escape").exists()



def test_one_request_is_bounded_and_nothing_is_added_from_it(client, root):
    """Every upload of a request is read into memory: a request over MAX_REQUEST gets 413, said
    up front (Content-Length) or while a chunked body grows past it (the page sends batches)."""
    from graft.app.server import MAX_REQUEST

    def chunks():  # one photo part growing 1 MiB at a time, so the test holds no more than that
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
        for _ in range(MAX_REQUEST // 2**20 + 2):
            yield b"\0" * 2**20

    headers = {"content-type": "multipart/form-data; boundary=b"}
    grown = client.post(f"/api/add?p=digits&token={TOKEN}", content=chunks(), headers=headers)
    assert grown.status_code == 413 and "too large" in grown.json()["error"]
    declared = client.post("/api/add?p=digits", content=b"",
                           headers={**headers, "content-length": str(MAX_REQUEST + 1)})
    assert declared.status_code == 413
    assert sorted(p.name for p in (root / "digits").iterdir()) == ["0", "1", "2"]


@pytest.mark.parametrize("path", ["digits\x00", "x" * 300, "digits/" + "y" * 300])
def test_a_path_the_system_cannot_take_gets_one_message_not_a_crash(client, path):
    client.get(f"/?token={TOKEN}")
    for answer in (client.get("/data", params={"p": path}), client.get("/thumb", params={"path": path}),
                   client.get("/file", params={"path": path}), client.post("/api/train", params={"p": path})):
        assert answer.status_code == 400 and "cannot be a path here" in answer.text


def test_a_photo_path_with_a_nul_byte_gets_one_line_not_a_crash(client, root):
    client.get(f"/?token={TOKEN}")
    for path in (str(root / "digits" / "0" / "x\x00.png"), str(root / "digits" / ("y" * 300))):
        for call, form in (("/api/decide", {"path": path}), ("/api/file", {"path": path, "cls": "0"})):
            answer = client.post(f"{call}?p=digits", data=form)
            assert answer.status_code == 400 and "is not a photo" in answer.json()["error"], (call, path[-5:])
    assert not state_folder(root / "digits").exists()

def test_hostile_names_of_classes_and_files_get_one_line_and_write_nothing_odd(client, root, digits_dir):
    project, photo = root / "digits", sorted((digits_dir / "5").glob("*.png"))[0]
    client.get(f"/?token={TOKEN}")
    one = [("file", (photo.name, photo.read_bytes(), "image/png"))]
    for bad in ("", "c" * 300, "x\x00y", "x\ny", "bees\u202egpj.exe"):
        answer = client.post("/api/add?p=digits", data={"cls": bad}, files=one)
        assert answer.status_code == 400 and "cannot be a class name" in answer.json()["error"], bad
    assert sorted(p.name for p in project.iterdir()) == ["0", "1", "2"]
    names = ["x" * 300 + ".png", "a\u202egnp.exe", ".."]  # (a newline or tab arrives %-encoded by the browser)
    answer = client.post("/api/add?p=digits", data={"cls": "0"},
                         files=[("file", (name, photo.read_bytes(), "image/png")) for name in names])
    assert answer.status_code == 200 and answer.json()["refused"] == []
    added = answer.json()["added"]
    assert added == ["x" * 100 + ".png", "a_gnp.exe", "photo.jpg"]
    assert all((project / "0" / name).read_bytes() == photo.read_bytes() for name in added)

def test_label_these_next_picks_from_the_pool_and_files_a_copy(client, root, digits_dir):
    """The real graft select in a child process on a pool beside the project; a pick filed into a class."""
    project, pool = root / "digits", root / "digits-unlabelled"
    pool.mkdir()
    for name in ("0", "1", "2"):
        for image in sorted((digits_dir / name).glob("*.png"))[6:8]:
            shutil.copy2(image, pool / f"{name}-{image.name}")
    before = sorted(p.name for p in pool.iterdir())
    page = client.get(f"/data?p=digits&token={TOKEN}").text
    assert 'value="digits-unlabelled"' in page  # the pool beside the project is found
    assert client.post("/api/select?p=digits", data={"pool": "digits"}).json()["error"].endswith(
        "the photos without a label go in a folder of their own")
    assert client.post("/api/select?p=digits", data={"pool": "digits-unlabelled"}).status_code == 200
    deadline = time.monotonic() + 180
    while (status := client.get("/api/status?p=digits&kind=select").json())["state"] == "running" \
            and time.monotonic() < deadline:
        time.sleep(0.3)
    assert status["state"] == "done", status
    page = client.get("/data?p=digits").text
    picks = [line.split('data-path="')[1].split('"')[0] for line in page.splitlines() if 'class="panel pick"' in line]
    assert len(picks) == 6 and {Path(p).name for p in picks} == set(before)
    filed = client.post("/api/file?p=digits", data={"path": picks[0], "cls": Path(picks[0]).name[0]}).json()
    assert (project / filed["class"] / filed["added"]).read_bytes() == Path(picks[0]).read_bytes()
    assert picks[0] not in client.get("/data?p=digits").text  # filed: no longer offered
    assert sorted(p.name for p in pool.iterdir()) == before  # the pool is never changed


def test_a_pool_holding_the_project_is_refused_in_words_before_any_job(client, root):
    client.get(f"/?token={TOKEN}")
    for call in ("/api/select", "/api/cluster"):
        answer = client.post(f"{call}?p=digits", data={"pool": "."})  # the root: it holds the project
        assert answer.status_code == 400 and answer.json()["error"].endswith(
            "holds the project itself: the photos without a label go in a folder of their own, beside the project")
    assert training.runs(root / "digits", None) == []

def test_groups_of_the_pool_are_named_into_a_class(client, root, digits_dir):
    """The real graft cluster on a pool of real digits; one group copied into a new class folder."""
    project, pool = root / "digits", root / "digits-unlabelled"
    pool.mkdir()
    for name in ("3", "4", "5"):
        for image in sorted((digits_dir / name).glob("*.png"))[:6]:
            shutil.copy2(image, pool / f"{name}-{image.name}")
    assert client.post(f"/api/cluster?p=digits&token={TOKEN}", data={"pool": "digits-unlabelled"}).status_code == 200
    deadline = time.monotonic() + 180
    while (status := client.get("/api/status?p=digits&kind=cluster").json())["state"] == "running" \
            and time.monotonic() < deadline:
        time.sleep(0.3)
    assert status["state"] == "done", status
    page = client.get("/data?p=digits").text
    groups = [line.split('data-cluster="')[1].split('"')[0] for line in page.splitlines()
              if 'class="panel group"' in line]
    assert len(groups) >= 2
    named = client.post("/api/name-group?p=digits", data={"cluster": groups[0], "cls": "new"}).json()
    assert named["copied"] >= 1 and named["refused"] == []
    assert len(list((project / "new").iterdir())) == named["copied"] and len(list(pool.iterdir())) == 18
    assert f'data-cluster="{groups[0]}"' not in client.get("/data?p=digits").text  # named: no longer offered


def _wait(client, path: str, until, limit: float = 240) -> dict:
    deadline = time.monotonic() + limit
    while not until(answer := client.get(path).json()) and time.monotonic() < deadline:
        time.sleep(0.3)
    return answer


def test_a_fine_tune_whose_process_dies_resumes_from_its_last_epoch(client, root, monkeypatch):
    """The real finetune recipe; its process killed (SIGKILL: a crash) after an epoch; Resume = graft resume."""
    import signal

    monkeypatch.delenv("GRAFT_NO_PROGRESS", raising=False)  # the page reads the epochs off the progress bars
    project = root / "digits"
    run = client.post(f"/api/train?p=digits&how=finetune&token={TOKEN}").json()["run"]
    checkpoint = state_folder(project, "runs", run, "checkpoints", "last.pt")
    _wait(client, "/api/status?p=digits", lambda s: checkpoint.exists() or s["state"] != "running")
    assert client.get("/api/status?p=digits").json()["step"].startswith(("training the new head, epoch",
                                                                          "fine-tuning"))
    os.killpg(int(state_folder(project, "app", f"{run}.pid").read_text()), signal.SIGKILL)
    stopped = _wait(client, "/api/status?p=digits", lambda s: s["state"] != "running", 30)
    assert stopped["state"] == "failed" and stopped["resumable"], stopped
    assert client.post("/api/resume?p=digits").json() == {"run": run}
    done = _wait(client, "/api/status?p=digits", lambda s: s["state"] != "running")
    assert done["state"] == "done" and done["run"] == run, done
    history = state_folder(project, "runs", run, "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in history] == list(range(1, 26))  # head:20,top2:5, none twice
    assert training.latest_model(project) == state_folder(project, "runs", run)
    assert client.post("/api/resume?p=digits").status_code == 409  # finished: nothing to resume


@pytest.fixture
def live(root):
    """The app on a real uvicorn server (a free port) and a headless Debian Chromium: (base URL, driver)."""
    import socket
    import threading

    import uvicorn

    if not (os.path.exists("/usr/bin/chromium") and os.path.exists("/usr/bin/chromedriver")):
        pytest.skip("needs Debian's chromium and chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(root, TOKEN), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=800,500"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", driver
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(10)


def test_a_tab_refused_because_another_trains_follows_that_run_and_its_cancel_stops_it(root, live):
    """Tab B opened before tab A clicked Train: its Train is refused (409); it then shows A's run
    with Cancel enabled (it used to keep showing 'Not trained yet' with Cancel greyed)."""
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, driver = live
    wait = WebDriverWait(driver, 60)
    driver.get(f"{base}/train?p=digits&token={TOKEN}")  # tab B, while nothing trains
    wait.until(lambda d: d.find_element(By.ID, "state").get_attribute("data-state") == "idle")
    assert httpx.post(f"{base}/api/train?p=digits&token={TOKEN}", timeout=30).status_code == 200  # tab A
    driver.find_element(By.ID, "train").click()
    wait.until(lambda d: "training already" in d.find_element(By.ID, "message").text)
    wait.until(lambda d: d.find_element(By.ID, "cancel").is_enabled())
    assert driver.find_element(By.ID, "state").get_attribute("data-state") == "running"
    driver.find_element(By.ID, "cancel").click()
    wait.until(lambda d: d.find_element(By.ID, "state").get_attribute("data-state") == "cancelled")
    assert training.status(root / "digits").state == "cancelled"


def test_a_message_for_a_button_far_down_the_page_is_scrolled_into_sight(live):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, driver = live
    driver.get(f"{base}/data?p=digits&token={TOKEN}")
    pool = driver.find_element(By.ID, "pool")
    driver.execute_script("arguments[0].scrollIntoView()", pool)
    pool.send_keys("/etc")
    driver.find_element(By.ID, "select").click()
    WebDriverWait(driver, 30).until(lambda d: "is outside the folder" in d.find_element(By.ID, "message").text)
    top = driver.execute_script("return document.getElementById('message').getBoundingClientRect().top")
    assert -2 < top < driver.execute_script("return window.innerHeight")  # on screen, not above it
