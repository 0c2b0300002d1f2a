"""Distillation with a transfer set (issue #18): few labels and a folder of unlabelled photos.

flowers17, seed 0, per class: 20 validation, 10 labelled and 50 unlabelled images (built as
symlinks in a scratch folder; the unlabelled ones in one flat folder, their classes dropped).
The teacher is `graft fit` on the 170 labels; the student is lite0 at 128 px, trained

- alone on the 170 labels (alpha 0: the baseline the student must beat by 7 points),
- with the teacher on the 170 labels only,
- on the teacher's hard labels for the 850 unlabelled images plus the 170 labels (alpha 0),
- with the teacher + `--unlabelled` (soft targets), the teacher on the student's augmented
  crop at each step (`--teacher-inputs augmented`) or on each plain image once (`plain`),

all with the same plan, and the prediction speed of teacher and student (images/s through
`predict_paths`, ONNX Runtime, no cache, on the 340 validation images).

    python bench/bench_distill_unlabelled.py                          # all rows, ~1 h on 2 busy cores
    python bench/bench_distill_unlabelled.py --rows alone,soft-augmented
"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np

from bench_distill import images_per_second
from common import save_rows, scratch_folder

FLOWERS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "flowers17"
ROWS = ("alone", "teacher-labelled-only", "hard-labels", "soft-augmented", "soft-plain")


def build_split(root: Path, seed: int, val: int, labelled: int, unlabelled: int) -> dict[str, Path]:
    """val/<class>/, labelled/<class>/ and a flat unlabelled/ folder of symlinks; returns the
    three folders and the unlabelled images' true classes (for the hard-label row's report)."""
    rng = np.random.default_rng(seed)
    folders = {name: root / name for name in ("val", "labelled", "unlabelled")}
    truth = {}
    for class_dir in sorted(p for p in FLOWERS.iterdir() if p.is_dir()):
        files = sorted(class_dir.iterdir())
        order = [files[i] for i in rng.permutation(len(files))]
        parts = {"val": order[:val], "labelled": order[val:val + labelled],
                 "unlabelled": order[val + labelled:val + labelled + unlabelled]}
        for name, chosen in parts.items():
            target = folders[name] if name == "unlabelled" else folders[name] / class_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for path in chosen:
                link = target / (f"{class_dir.name}-{path.name}" if name == "unlabelled" else path.name)
                os.symlink(path.resolve(), link)
                truth[str(link)] = class_dir.name
    return folders, truth


def hard_label_folder(root: Path, teacher_run: Path, folders: dict, truth: dict) -> tuple[Path, float]:
    """labelled/ plus every unlabelled image in the class folder the teacher predicts; and the
    teacher's accuracy on those images (how clean the pseudo-labels are)."""
    from graft.artifacts.model import GraftModel

    model = GraftModel.load(teacher_run)
    paths = sorted(str(p) for p in folders["unlabelled"].iterdir())
    features, probabilities = model.predict_paths(paths, cache=False, progress=False)
    predicted = [model.classes[i] for i in probabilities.argmax(1)]
    for class_dir in folders["labelled"].iterdir():
        (root / class_dir.name).mkdir(parents=True, exist_ok=True)
        for link in class_dir.iterdir():
            os.symlink(os.readlink(link), root / class_dir.name / link.name)
    for path, name in zip(features.paths, predicted):
        os.symlink(os.readlink(path), root / name / Path(path).name)
    correct = np.mean([truth[p] == name for p, name in zip(features.paths, predicted)])
    return root, float(correct)


def main() -> None:
    from graft.recipes.distill import distill
    from graft.recipes.frozen import fit_frozen

    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0, help="which images fall in which part")
    parser.add_argument("--teacher-backbone", default="tf_efficientnet_lite0",
                        help="lite0 (224 px) fits these 170 labels better than lite2: 0.894 vs 0.882")
    parser.add_argument("--student-size", type=int, default=128)
    parser.add_argument("--stages", default="head:5,top2:5", help="every student's plan")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=None,
                        help="alpha of the students with the teacher (default: graft distill's)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"students to train, of {', '.join(ROWS)}")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = {}
    with scratch_folder("bench-distill-unlabelled-") as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folders, truth = build_split(scratch / "data", args.seed, 20, 10, 50)
        started = time.perf_counter()
        teacher = scratch / "teacher"
        accuracy = fit_frozen(folders["labelled"], teacher, val_dir=folders["val"], backbone=args.teacher_backbone,
                              progress=False).metrics["accuracy"]
        rows["teacher"] = {"model": f"{args.teacher_backbone} graft fit", "accuracy": accuracy,
                           "train_seconds": round(time.perf_counter() - started, 1)}
        print(f"teacher: {rows['teacher']}", flush=True)
        common = dict(teacher=str(teacher), backbone="tf_efficientnet_lite0", image_size=args.student_size,
                      stages=args.stages, temperature=args.temperature, val_dir=str(folders["val"]), progress=False)
        for name in args.rows.split(","):
            settings = {"alone": dict(alpha=0.0), "teacher-labelled-only": dict(alpha=args.alpha),
                        "soft-augmented": dict(alpha=args.alpha, unlabelled_dir=str(folders["unlabelled"])),
                        "soft-plain": dict(alpha=args.alpha, unlabelled_dir=str(folders["unlabelled"]),
                                           teacher_inputs="plain"),
                        "hard-labels": dict(alpha=0.0)}[name]
            data = folders["labelled"]
            if name == "hard-labels":
                data, clean = hard_label_folder(scratch / "pseudo", teacher, folders, truth)
                rows.setdefault("teacher", {})["accuracy_on_unlabelled"] = round(clean, 4)
            started = time.perf_counter()
            result = distill(str(data), scratch / name, **settings, **common)
            rows[name] = {"model": f"lite0 {args.student_size} px", **{k: v for k, v in settings.items()
                                                                         if k != "unlabelled_dir"},
                          "unlabelled": "unlabelled_dir" in settings or name == "hard-labels",
                          "accuracy": result.metrics["accuracy"],
                          "train_seconds": round(time.perf_counter() - started, 1)}
            print(f"{name}: {rows[name]}", flush=True)
        paths = [str(p) for p in sorted(folders["val"].rglob("*.jpg"))]
        for name in rows:
            rows[name]["images_per_second"] = round(images_per_second(scratch / name, paths), 1)
        print(f"\n{'row':24s} {'model':26s} accuracy  images/s  train s")
        for name, row in rows.items():
            print(f"{name:24s} {row['model']:26s} {row['accuracy']:.4f}  {row['images_per_second']:8.1f}  "
                  f"{row['train_seconds']:7.1f}")
        if "alone" in rows:
            print(f"\nbar: soft student >= {rows['alone']['accuracy'] + 0.07:.4f} (alone + 7 points) and >= "
                  f"{rows['teacher']['accuracy']:.4f} (teacher)")
        save_rows(rows, args.json)


if __name__ == "__main__":
    main()
