"""graft zeroshot (issue 25): ants vs bees with no training image, scored on hymenoptera/val;
flowers17's 17 folder names, of which it must refuse the ones ImageNet does not cover.

    python bench/bench_zeroshot.py [--json rows.json]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from common import save_rows, scratch_folder

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    from graft.recipes.frozen import evaluate
    from graft.recipes.zeroshot import zeroshot

    rows = []
    with scratch_folder("bench-zeroshot-") as scratch:
        start = time.perf_counter()
        run = zeroshot("ants,bees", scratch / "hym", progress=False).run_dir
        _, metrics = evaluate(run, DATASETS / "hymenoptera" / "val", progress=False)
        rows.append({"classes": "ants,bees", "data": "hymenoptera/val", "accuracy": metrics["accuracy"],
                     "n": metrics["n_val"], "seconds": round(time.perf_counter() - start, 1)})
        print(rows[-1])
        names = ",".join(sorted(p.name for p in (DATASETS / "flowers17").iterdir() if p.is_dir()))
        done = subprocess.run([sys.executable, "-m", "graft", "zeroshot", "--classes", names, "-o",
                               str(scratch / "flowers")], capture_output=True, text=True)
        refused = [line.split(":")[0] for line in done.stderr.splitlines() if ": no ImageNet class" in line]
        rows.append({"classes": "flowers17's 17 names", "exit": done.returncode, "refused": refused,
                     "written": (scratch / "flowers").exists()})
        print(f"flowers17: exit {done.returncode}, {len(refused)} names refused ({', '.join(refused)}), "
              f"run folder written: {(scratch / 'flowers').exists()}")
    save_rows(rows, args.json)


if __name__ == "__main__":
    main()
