"""Peak memory of ``graft predict RUN FOLDER``: does it stay flat as the folder grows? (issue 30, item 22)

Run (from the repository root):

    .venv/bin/python bench/bench_predict_memory.py --run runs/hym
    .venv/bin/python bench/bench_predict_memory.py --run runs/hym --src /tmp/old-graft/src   # another graft
    .venv/bin/python bench/bench_predict_memory.py --run runs/hym --small 50 --large 500     # smoke run

Images: ``--large`` (5000) small real photos, made once into ``--images`` (default
/tmp/graft-bench-predict-images): random 160 x 160 crops of the flowers17 and hymenoptera
photos (seed 0), cycled through the 1758 photos, re-encoded as JPEG quality 90. The first
``--small`` (500) of them are linked into a second folder.

Each N runs the whole CLI, ``graft predict RUN FOLDER --csv -q`` (stdout to /dev/null), in a
child process of its own, after one warm-up run that exports model.onnx (``--src`` puts another
graft's source first on its path, e.g. a ``git archive`` of the commit before the fix), and
reports its peak RSS (``ru_maxrss``). Without ``--run``, a model is fitted first on hymenoptera train/val (default
settings) into a scratch folder. The figure of merit is peak(large) - peak(small), target < 200 MB.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def make_images(target: Path, count: int) -> Path:
    """``count`` 160 px JPEG crops of real photos in ``target`` (kept: made once)."""
    import numpy as np
    from PIL import Image

    if target.is_dir() and len(list(target.glob("*.jpg"))) >= count:
        return target
    target.mkdir(parents=True, exist_ok=True)
    photos = sorted((SHARED / "flowers17").rglob("*.jpg")) + sorted((SHARED / "hymenoptera").rglob("*.jpg"))
    rng = np.random.default_rng(0)
    for i in range(count):
        with Image.open(photos[i % len(photos)]) as image:
            image = image.convert("RGB")
            side = min(image.size) // 2
            x, y = rng.integers(0, image.width - side + 1), rng.integers(0, image.height - side + 1)
            image.crop((x, y, x + side, y + side)).resize((160, 160)).save(target / f"crop-{i:05d}.jpg", quality=90)
    return target


def child(run: str, folder: str) -> None:
    import contextlib

    from graft.cli import main

    start = time.perf_counter()
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        try:  # graft predict's exit status (1: some files skipped), returned or raised by older grafts
            code = main(["predict", run, folder, "--csv", "-q"], standalone_mode=False) or 0
        except SystemExit as exc:
            code = exc.code
    print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "exit": code,
                      "seconds": time.perf_counter() - start, "graft": __import__("graft").__file__}))


def run_child(run: str, folder: Path, src: str | None) -> dict:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", run, str(folder)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child for {folder} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fitted_run(scratch: Path) -> str:
    from graft.recipes.frozen import fit_frozen

    hym = SHARED / "hymenoptera"
    return str(fit_frozen(hym / "train", scratch / "hym", val_dir=str(hym / "val"), progress=False).run_dir)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run")
    parser.add_argument("--images", default=os.path.join(tempfile.gettempdir(), "graft-bench-predict-images"))
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=5000)
    parser.add_argument("--src", help="a graft source folder to measure instead of the installed one")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    images = make_images(Path(args.images), args.large)
    folders = {}
    for n in (args.small, args.large):
        folder = Path(args.images + f"-first{n}")
        folder.mkdir(exist_ok=True)
        for path in sorted(images.glob("*.jpg"))[:n]:
            if not (folder / path.name).exists():
                (folder / path.name).symlink_to(path)
        folders[n] = folder
    with tempfile.TemporaryDirectory(prefix="graft-bench-predict-") as scratch:
        run = args.run or fitted_run(Path(scratch))
        print(f"run {run}; graft source: {args.src or 'installed'}; load average {os.getloadavg()[0]:.2f}")
        run_child(run, folders[args.small], args.src)  # warm-up: exports model.onnx once (imports torch)
        results = {n: run_child(run, folder, args.src) for n, folder in folders.items()}
    for n, r in results.items():
        print(f"{n:>6} images: peak RSS {r['peak_kib'] / 1024:8.1f} MB  {r['seconds']:6.1f} s  exit {r['exit']}")
    growth = (results[args.large]["peak_kib"] - results[args.small]["peak_kib"]) / 1024
    print(f"peak RSS growth {args.small} -> {args.large} images: {growth:.1f} MB "
          f"(target < 200 MB: {'MET' if growth < 200 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
