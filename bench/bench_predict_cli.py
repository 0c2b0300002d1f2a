"""The whole `graft predict RUN one.jpg` command, warm (issue 19): fast path vs torch path.

    python bench/bench_predict_cli.py --run RUN --image one.jpg [--repeats 5]

Runs the installed `graft` console script as a child process --repeats times for each path
(after one warm-up run each: the fast path's model.onnx is current, the torch path's feature
cache and the OS file cache are warm) and reports the median wall time and the peak RSS of the
child (from wait4's rusage). The fast path is the default; the torch path is `--engine torch`
(today's predict before this: the torch model, features through the extractor).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save_rows  # noqa: E402


def timed(command: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, stdout) of one child process."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = child.stdout.read()
    child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed")
    return wall, usage.ru_maxrss / 1024, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    graft = str(Path(sys.executable).parent / "graft")
    rows = []
    for label, extra in (("fast (ONNX Runtime)", []), ("torch (--engine torch)", ["--engine", "torch"])):
        command = [graft, "predict", args.run, args.image, "--json", *extra]
        timed(command)  # warm-up
        runs = [timed(command) for _ in range(args.repeats)]
        row = {"path": label, "median_s": round(statistics.median(r[0] for r in runs), 3),
               "min_s": round(min(r[0] for r in runs), 3), "peak_rss_mb": round(max(r[1] for r in runs), 1),
               "answer": json.loads(runs[-1][2].splitlines()[0])}
        rows.append(row)
        print(json.dumps(row))
    print(f"torch / fast: {rows[1]['median_s'] / rows[0]['median_s']:.1f}x the wall, "
          f"{rows[1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.1f}x the peak RSS")
    save_rows(rows, args.json)


if __name__ == "__main__":
    main()
