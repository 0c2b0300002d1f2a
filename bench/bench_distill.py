"""Teacher-student distillation (issue #8) on flowers17 (25 % split, seed 0): a fine-tuned
teacher, then a faster student trained with and without it (same plan, same images), with
accuracy and prediction speed (images/s through `predict_paths`, ONNX Runtime, no cache).

    python bench/bench_distill.py                     # about 12 minutes on 2 cores
    python bench/bench_distill.py --alphas 0.9        # one more student
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

from common import save_rows, scratch_folder

FLOWERS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "flowers17"


def images_per_second(run: Path, paths) -> float:
    from graft.artifacts.model import GraftModel

    model = GraftModel.load(run)
    model.predict_paths(paths[:8], cache=False, progress=False)  # export and warm-up
    started = time.perf_counter()
    model.predict_paths(paths, cache=False, progress=False)
    return len(paths) / (time.perf_counter() - started)


def main() -> None:
    from graft.data.folders import load_train_val
    from graft.recipes.distill import distill
    from graft.recipes.finetune import finetune

    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher-size", type=int, default=224)
    parser.add_argument("--student-size", type=int, default=128)
    parser.add_argument("--teacher-stages", default="head:3,top2:4")
    parser.add_argument("--student-stages", default="head:5,top2:5")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alphas", default="0,0.5", help="alpha of each student; 0 = without the teacher")
    parser.add_argument("--mixup", type=float, default=0.0, help="MixUp alpha for every student (same recipe)")
    parser.add_argument("--cutmix", type=float, default=0.0, help="CutMix alpha for every student")
    parser.add_argument("--teacher-run", default=None, help="reuse this teacher run folder instead of training one")
    parser.add_argument("--seed", type=int, default=0, help="the 25 %% split's and every run's seed")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = {}
    with scratch_folder("bench-distill-") as scratch:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, val = load_train_val(FLOWERS, val_fraction=0.25, seed=args.seed)
            paths = [record.path for record in val.records]
            started = time.perf_counter()
            teacher_run = Path(args.teacher_run) if args.teacher_run else scratch / "teacher"
            if args.teacher_run:
                accuracy = json.loads((teacher_run / "metrics.json").read_text())["accuracy"]
            else:
                accuracy = finetune(FLOWERS, teacher_run, val_fraction=0.25, image_size=args.teacher_size,
                                    stages=args.teacher_stages, seed=args.seed, progress=False).metrics["accuracy"]
            rows["teacher"] = {"size": args.teacher_size, "accuracy": accuracy,
                               "train_seconds": round(time.perf_counter() - started, 1)}
            for alpha in (float(a) for a in args.alphas.split(",")):
                name = "student without teacher" if alpha == 0 else f"student with teacher (alpha {alpha:g})"
                started = time.perf_counter()
                student = distill(FLOWERS, scratch / name.replace(" ", "-"), teacher=str(teacher_run),
                                  backbone="tf_efficientnet_lite0", image_size=args.student_size,
                                  stages=args.student_stages, temperature=args.temperature, alpha=alpha,
                                  mixup=args.mixup, cutmix=args.cutmix, val_fraction=0.25, seed=args.seed,
                                  progress=False)
                rows[name] = {"size": args.student_size, "alpha": alpha, "accuracy": student.metrics["accuracy"],
                              "train_seconds": round(time.perf_counter() - started, 1)}
            for name in rows:
                run = teacher_run if name == "teacher" else scratch / name.replace(" ", "-")
                rows[name]["images_per_second"] = round(images_per_second(run, paths), 1)
                print(f"{name:26s} {rows[name]['size']} px  accuracy {rows[name]['accuracy']:.4f}  "
                      f"{rows[name]['images_per_second']:.1f} images/s  (trained in {rows[name]['train_seconds']} s)",
                      flush=True)
        save_rows(rows, args.json)


if __name__ == "__main__":
    main()
