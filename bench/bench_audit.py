"""graft audit on flowers17 (issue 25): flipped labels found, near copies paired, timing.

    python bench/bench_audit.py                     # labels (3 seeds of 5 % flips) and copies
    python bench/bench_audit.py --part labels --method confident-learning
    python bench/bench_audit.py --part clean        # what it flags on the untouched dataset
    python bench/bench_audit.py --part timing       # warm audit command; cold audit vs cold fit (own caches)

Flips: a scratch tree of symlinks to flowers17 in which 5 % of the images (seeded) sit in
another class's folder; the ``label`` rows are scored against them. Copies: 20 images re-saved
as JPEG quality 60, 20 resized to half, 20 cropped to their central 90 %, half of them put in
another class's folder, half in a validation folder; each should come back as a pair with its
original (issue leak, near-duplicate or duplicate), and pairs of two original images are listed.
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common import save_rows, scratch_folder
from graft.recipes.audit import audit

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "flowers17"
COPY_ISSUES = ("leak", "near-duplicate", "duplicate")


def link_tree(root: Path, moves: dict[Path, str]) -> Path:
    """A class-folder tree of symlinks to DATA; ``moves``: image -> the class folder it goes to."""
    for class_dir in sorted(p for p in DATA.iterdir() if p.is_dir()):
        for image in sorted(class_dir.iterdir()):
            target = root / moves.get(image, class_dir.name) / image.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(image, target)
    return root


def read_rows(run: Path) -> list[dict]:
    with open(run / "audit.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def labels_part(scratch: Path, seeds, method: str) -> list[dict]:
    images = sorted(p for p in DATA.glob("*/*") if p.is_file())
    classes = sorted(p.name for p in DATA.iterdir() if p.is_dir())
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        chosen = rng.choice(len(images), round(0.05 * len(images)), replace=False)
        moves = {images[i]: str(rng.choice([c for c in classes if c != images[i].parent.name])) for i in chosen}
        tree = link_tree(scratch / f"flips-{seed}", moves)
        start = time.perf_counter()
        result = audit(str(tree), scratch / f"run-flips-{seed}", label_method=method, progress=False)
        seconds = time.perf_counter() - start
        flagged = {Path(r["path"]).name for r in read_rows(result.run_dir) if r["issue"] == "label"}
        flipped = {image.name for image in moves}
        hit = len(flagged & flipped)
        row = {"seed": seed, "method": method, "flips": len(flipped), "flagged": len(flagged),
               "precision": round(hit / max(len(flagged), 1), 4), "recall": round(hit / len(flipped), 4),
               "seconds": round(seconds, 1)}
        print(row, flush=True)
        rows.append(row)
    for key in ("precision", "recall"):
        values = [r[key] for r in rows]
        print(f"{key}: mean {np.mean(values):.3f}  min {min(values):.3f}  max {max(values):.3f}")
    return rows


def make_copies(tree: Path, val: Path, seed: int = 0) -> dict[str, Path]:
    """60 altered copies, half in another class of ``tree``, half in ``val``; name -> original."""
    images = sorted(p for p in DATA.glob("*/*") if p.is_file())
    classes = sorted(p.name for p in DATA.iterdir() if p.is_dir())
    rng = np.random.default_rng(seed)
    made = {}
    for n, index in enumerate(rng.choice(len(images), 60, replace=False)):
        original = images[index]
        image = Image.open(original).convert("RGB")
        kind = ("jpeg60", "half", "crop90")[n // 20]
        if kind == "half":
            image = image.resize((image.width // 2, image.height // 2), Image.BILINEAR)
        elif kind == "crop90":
            w, h = image.size
            image = image.crop((round(0.05 * w), round(0.05 * h), round(0.95 * w), round(0.95 * h)))
        other = str(rng.choice([c for c in classes if c != original.parent.name]))
        folder = (tree if n % 2 == 0 else val) / (other if n % 2 == 0 else original.parent.name)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"copy-{kind}-{original.stem}.jpg"
        image.save(folder / name, quality=60 if kind == "jpeg60" else 90)
        made[name] = original
    return made


def copies_part(scratch: Path) -> list[dict]:
    tree, val = link_tree(scratch / "copies", {}), scratch / "copies-val"
    made = make_copies(tree, val)
    result = audit(str(tree), scratch / "run-copies", val_dir=str(val), progress=False)
    pairs = [(Path(r["path"]), Path(r["other_path"]), r["issue"], r["score"], r["detail"])
             for r in read_rows(result.run_dir) if r["issue"] in COPY_ISSUES]
    own = {frozenset((a.resolve(), b.resolve())) for a, b, *_ in pairs if a.name not in made and b.name not in made}

    def same_photo(copy: str, other: Path) -> bool:  # its original, or a copy of it that flowers17 holds itself
        return other.resolve() == made[copy] or frozenset((other.resolve(), made[copy])) in own

    found, wrong = set(), []
    for a, b, issue, score, detail in pairs:
        if a.name in made or b.name in made:
            copy, other = (a.name, b) if a.name in made else (b.name, a)
            (found.add(copy) if same_photo(copy, other) else wrong.append((str(a), str(b), issue, score, detail)))
    by_kind = {k: sum(n.startswith(f"copy-{k}") for n in found) for k in ("jpeg60", "half", "crop90")}
    print(f"copies found with their original: {len(found)}/60 {by_kind}")
    print(f"copies paired with another photo: {len(wrong)}")
    for item in wrong:
        print("   ", *item)
    print(f"pairs of two flowers17 images (its own copies: look at them): {len(own)}, "
          f"{len({p for pair in own for p in pair})} distinct images")
    for pair in sorted(sorted(map(str, pair)) for pair in own):
        print("   ", *pair)
    return [{"found": len(found), "by_kind": by_kind, "wrong": wrong, "own": sorted(sorted(map(str, p)) for p in own)}]


def clean_part(scratch: Path) -> list[dict]:
    result = audit(str(DATA), scratch / "run-clean", progress=False)
    rows = [r for r in read_rows(result.run_dir) if r["issue"] not in COPY_ISSUES]
    for r in rows:
        print(r["issue"], r["path"], r["given"], "->", r["suggested"], r["score"])
    print(result.metrics["issues"])
    return rows


def timing_part(scratch: Path) -> list[dict]:
    graft = [sys.executable, "-m", "graft"]
    rows = []

    def timed(name, command, env=None):
        start, before = time.perf_counter(), os.times()
        subprocess.run(command, check=True, capture_output=True, env=env)
        after = os.times()
        row = {"run": name, "wall_s": round(time.perf_counter() - start, 2),
               "cpu_s": round(after.children_user + after.children_system - before.children_user
                              - before.children_system, 2)}
        print(row, flush=True)
        rows.append(row)

    timed("audit, warm cache", [*graft, "audit", str(DATA), "-o", str(scratch / "warm"), "-q"])
    timed("audit, warm cache (again)", [*graft, "audit", str(DATA), "-o", str(scratch / "warm"), "-q"])
    for name, command in (("fit", "fit"), ("audit", "audit")):
        env = {**os.environ, "GRAFT_CACHE_DIR": str(scratch / f"cache-{name}")}
        timed(f"{name}, cold cache", [*graft, command, str(DATA), "-o", str(scratch / f"cold-{name}"), "-q"], env)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("labels", "copies", "clean", "timing", "all"), default="all")
    parser.add_argument("--method", default="threshold", choices=("threshold", "confident-learning"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"needs {DATA}")
    rows = []
    with scratch_folder("bench-audit-") as scratch:
        if args.part in ("labels", "all"):
            rows += labels_part(scratch, [int(s) for s in args.seeds.split(",")], args.method)
        if args.part in ("copies", "all"):
            rows += copies_part(scratch)
        if args.part == "clean":
            rows += clean_part(scratch)
        if args.part == "timing":
            rows += timing_part(scratch)
    save_rows(rows, args.json)


if __name__ == "__main__":
    main()
