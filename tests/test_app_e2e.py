"""graft app end to end: a real `graft app` on 127.0.0.1 driven by Debian's Chromium (selenium).

A project of 20 real photos per class of hymenoptera: open it, look at the data, train with the
default, read the validation accuracy off the page, try a validation photo and a text file
named .jpg, export and find the file. GRAFT_APP_SCREENSHOTS=DIR keeps a screenshot of each step
(docs/app/ holds the ones in the docs).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED_DATASETS, copy_subset

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
webdriver = pytest.importorskip("selenium.webdriver")
pytestmark = [
    pytest.mark.skipif(not (SHARED_DATASETS / "hymenoptera").is_dir(), reason=f"no datasets at {SHARED_DATASETS}"),
    pytest.mark.skipif(not (os.path.exists("/usr/bin/chromium") and os.path.exists("/usr/bin/chromedriver")),
                       reason="Debian's chromium and chromium-driver are not installed"),
]


def project_dir(tmp_path: Path) -> Path:
    return tmp_path / "root" / "hymenoptera"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def app_url(tmp_path, private_cache):
    """`graft app --root ROOT` in a child process (progress bars on, as for a user); its printed URL."""
    project = copy_subset(SHARED_DATASETS / "hymenoptera" / "train", tmp_path / "root" / "hymenoptera", 20)
    ant = sorted((project / "ants").iterdir())[0]
    shutil.copy2(ant, project / "bees" / "wrong-label.jpg")  # an ant filed as a bee: the audit's to find
    env = {k: v for k, v in os.environ.items() if k != "GRAFT_NO_PROGRESS"}
    process = subprocess.Popen([sys.executable, "-m", "graft", "app", "--root", str(tmp_path / "root"), "--port",
                                str(_free_port())], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env)
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        url = re.search(r"http://127\.0\.0\.1:\d+/\?token=\S+", "".join(lines))
        assert url, lines
        yield url.group(0)
    finally:
        process.terminate()
        process.wait(20)


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=800,500",
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"):  # Chromium's test camera
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    # an 800 x 500 page whatever the headless window's frame takes: the screenshots' size
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 800, "height": 500, "deviceScaleFactor": 1, "mobile": False})
    yield driver
    driver.quit()


def test_open_train_read_accuracy_try_and_export_in_chromium(app_url, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shots = Path(os.environ.get("GRAFT_APP_SCREENSHOTS", tmp_path / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    from selenium.common.exceptions import StaleElementReferenceException

    find = browser.find_element
    wait = WebDriverWait(browser, 120, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,))

    browser.get(app_url)
    browser.save_screenshot(str(shots / "1-open.png"))
    find(By.CSS_SELECTOR, "a.project").click()  # the one candidate: hymenoptera
    assert find(By.ID, "summary").text.startswith("2 classes, 41 photos")
    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".count")] == ["20 photos", "21 photos"]
    wait.until(lambda b: all(i.get_attribute("naturalWidth") not in (None, "0")
                             for i in b.find_elements(By.CSS_SELECTOR, ".thumbs img")))
    browser.save_screenshot(str(shots / "2-data.png"))

    _audit_and_leave_out_the_wrong_label(browser, wait, shots, tmp_path)

    find(By.ID, "next").click()
    find(By.ID, "train").click()
    wait.until(lambda b: find(By.ID, "state").get_attribute("data-state") == "running")
    browser.save_screenshot(str(shots / "4-training.png"))
    browser.refresh()  # progress is read from the run's files: a reload keeps it
    wait.until(lambda b: find(By.ID, "state").get_attribute("data-state") in ("running", "done"))
    wait.until(lambda b: find(By.ID, "state").get_attribute("data-state") != "running")
    assert find(By.ID, "state").get_attribute("data-state") == "done", find(By.ID, "state").text
    browser.save_screenshot(str(shots / "5-trained.png"))

    run = _read_the_results(browser, wait, shots, tmp_path)

    from graft.inference import Predictor

    photo = sorted((SHARED_DATASETS / "hymenoptera" / "val" / "bees").glob("*.jpg"))[3]
    predictor = Predictor.load(run, export=False)
    expected = predictor.top(predictor.predict_paths([photo]).probabilities[0], 1)[None][0][0]
    find(By.ID, "nav-try").click()
    find(By.ID, "files").send_keys(str(photo))
    card = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, ".card.done"))
    assert len(browser.find_elements(By.CSS_SELECTOR, ".card")) == 1
    assert card.find_elements(By.CSS_SELECTOR, ".top-class")[0].text == expected == "bees"
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("shopping list: milk, eggs")
    find(By.ID, "files").send_keys(str(not_an_image))
    failed = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, ".card.failed"))
    assert "notes.jpg is not an image graft can read" in failed.text
    assert len(browser.find_elements(By.CSS_SELECTOR, ".card")) == 2  # each photo tried once
    browser.save_screenshot(str(shots / "7-try.png"))
    _snap_the_webcam(browser, wait, shots)

    find(By.ID, "nav-ship").click()
    find(By.ID, "export").click()
    wait.until(lambda b: find(By.ID, "exported").is_displayed())
    path = Path(find(By.ID, "path").text)
    assert path == run / "model.onnx" and path.stat().st_size > 1_000_000
    assert find(By.ID, "command").text == f"graft export {run} --format onnx"
    browser.save_screenshot(str(shots / "8-ship.png"))

    browser.get(app_url.split("?")[0] + "data?p=/etc")
    assert "/etc is outside the folder graft app was started in" in find(By.ID, "message").text


def _audit_and_leave_out_the_wrong_label(browser, wait, shots: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "check").click()  # the audit: its run ends with the page reloaded, findings listed
    wait.until(lambda b: b.find_elements(By.ID, "audit-summary"))
    wrong = browser.find_element(By.CSS_SELECTOR, '.finding[data-path$="/bees/wrong-label.jpg"]')
    assert "same photo as ants/" in wrong.text and "in another class" in wrong.text
    browser.execute_script("arguments[0].scrollIntoView()", browser.find_element(By.ID, "audit"))
    browser.save_screenshot(str(shots / "3-audit.png"))
    wrong.find_element(By.CSS_SELECTOR, ".exclude").click()
    wait.until(lambda b: "left out" in b.find_element(By.CSS_SELECTOR, '.finding[data-path$="/wrong-label.jpg"]').text)
    decided = (tmp_path / "root" / ".graft-app" / "hymenoptera" / "exclude.csv").read_text()
    assert decided.splitlines()[1].startswith(str(project_dir(tmp_path) / "bees" / "wrong-label.jpg"))
    assert (project_dir(tmp_path) / "bees" / "wrong-label.jpg").exists()  # left out, never deleted


def _snap_the_webcam(browser, wait, shots: Path) -> None:
    """Chromium's fake camera: a frame snapped and tried like a chosen photo."""
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "camera").click()
    wait.until(lambda b: b.find_element(By.ID, "video").get_property("videoWidth") > 0)
    browser.find_element(By.ID, "snap").click()
    snapped = wait.until(lambda b: [c for c in b.find_elements(By.CSS_SELECTOR, ".card.done")
                                    if c.find_element(By.CSS_SELECTOR, ".name").text == "webcam-1.jpg"])[0]
    assert snapped.find_elements(By.CSS_SELECTOR, ".top-class")[0].text in ("ants", "bees")
    browser.save_screenshot(str(shots / "9-webcam.png"))

def _read_the_results(browser, wait, shots: Path, tmp_path: Path) -> Path:
    """The Results page against the run folder it reads: accuracy, mistakes, confusion matrix."""
    from selenium.webdriver.common.by import By

    find = browser.find_element
    find(By.ID, "nav-results").click()
    shown = float(find(By.ID, "accuracy").get_attribute("data-accuracy"))
    run = tmp_path / "root" / ".graft-app" / "hymenoptera" / "runs"
    run = sorted(run.iterdir())[-1]
    metrics = json.loads((run / "metrics.json").read_text())
    assert shown == metrics["accuracy"] and shown >= 0.75
    assert metrics["n_train"] + metrics["n_val"] == 40  # the photo left out was not trained on
    assert find(By.ID, "accuracy").text == f"{100 * shown:.1f} %"
    wrong = metrics["n_val"] - round(shown * metrics["n_val"])
    assert len(browser.find_elements(By.CSS_SELECTOR, ".mistake")) == wrong  # each mistake listed with its photo
    wait.until(lambda b: find(By.ID, "confusion").get_property("naturalWidth") > 0)
    browser.save_screenshot(str(shots / "6-results.png"))
    return run


def test_photos_chosen_in_the_page_are_added_in_batches(app_url, browser, digits_dir, tmp_path):
    """70 photos chosen at once go in two requests (a request holds at most 64 photos and
    100 MB: the app bounds what one request may cost), every one copied into the new class."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photos = sorted(digits_dir.rglob("*.png"))[:70]  # names repeat across the digit folders: each kept apart
    browser.get(app_url)
    browser.find_element(By.CSS_SELECTOR, "a.project").click()
    browser.find_element(By.ID, "add-class").send_keys("digits")
    browser.find_element(By.ID, "add-files").send_keys("\n".join(str(p) for p in photos))
    added = tmp_path / "root" / "hymenoptera" / "digits"
    WebDriverWait(browser, 60).until(lambda b: added.is_dir() and len(list(added.iterdir())) == len(photos))
    assert sorted(p.read_bytes() for p in added.iterdir()) == sorted(p.read_bytes() for p in photos)
