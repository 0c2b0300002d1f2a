"""graft app: time from clicking Train to a usable model (issue 27; the bar: under a minute).

    python bench/bench_app_train.py [--data ../shared/datasets/hymenoptera/train]

Copies DATA into a fresh root, starts `graft app --root ROOT` on a free port and does what the
Train button and Try it do over HTTP: POST /api/train, poll /api/status every 0.25 s until
done, then POST a validation photo to /api/predict. "Usable" is the first answer of Try it
(the model is fitted, reported and exported to ONNX by then). Two clicks: a cold feature cache
(a fresh GRAFT_CACHE_DIR, as a first Train) and a warm one (a second Train of the same photos).
The baseline in the same run: `graft fit DATA -o RUN` from a terminal on its own cold cache,
the same recipe without the app; the ratio is app / terminal.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def click_train(client: httpx.Client, photo: Path) -> tuple[float, float, float]:
    """(seconds to done, to the first Try it answer, validation accuracy) of one Train click."""
    start = time.perf_counter()
    client.post("/api/train", params={"p": "project"}).raise_for_status()
    while (status := client.get("/api/status", params={"p": "project"}).json())["state"] == "running":
        time.sleep(0.25)
    done = time.perf_counter() - start
    assert status["state"] == "done", status
    answer = client.post("/api/predict", params={"p": "project"}, files={"file": (photo.name, photo.read_bytes())})
    answer.raise_for_status()
    return done, time.perf_counter() - start, status["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "hymenoptera" / "train")
    parser.add_argument("--photo", type=Path, default=None, help="Try it photo (default: the first val bee)")
    args = parser.parse_args()
    photo = args.photo or sorted((SHARED / "hymenoptera" / "val" / "bees").glob("*.jpg"))[0]
    with tempfile.TemporaryDirectory(prefix="bench-app-") as tmp:
        tmp = Path(tmp)
        shutil.copytree(args.data, tmp / "root" / "project")
        env = {**os.environ, "GRAFT_CACHE_DIR": str(tmp / "cache-app")}
        port = free_port()
        app = subprocess.Popen([sys.executable, "-m", "graft", "app", "--root", str(tmp / "root"), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            url = re.search(r"http://\S+token=(\S+)", app.stdout.readline() + app.stdout.readline())
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", params={"token": url.group(1)},
                              timeout=300) as client:
                cold = click_train(client, photo)
                warm = click_train(client, photo)
        finally:
            app.terminate()
            app.wait(30)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "graft", "fit", str(tmp / "root" / "project"), "-o", str(tmp / "cli"),
                        "-q"], check=True, env={**os.environ, "GRAFT_CACHE_DIR": str(tmp / "cache-cli")},
                       stdout=subprocess.DEVNULL)
        terminal = time.perf_counter() - start
    images = sum(1 for p in args.data.rglob("*") if p.is_file())
    print(f"{images} photos of {args.data}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for name, (done, usable, accuracy) in (("cold cache", cold), ("warm cache", warm)):
        print(f"app, {name}: Train click -> done {done:.1f} s, -> first Try it answer {usable:.1f} s "
              f"(validation accuracy {accuracy:.4f})")
    print(f"terminal `graft fit` (cold cache, no export): {terminal:.1f} s; app cold / terminal: "
          f"{cold[1] / terminal:.2f}x")


if __name__ == "__main__":
    main()
