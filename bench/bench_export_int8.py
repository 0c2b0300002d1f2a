"""graft export --int8 on real runs (issue 29): the validation accuracy change the export reports,
and the int8 file's speed against the float export's, measured in the same run.

For each run folder: the float export and ``graft export RUN --int8`` (written to a scratch
folder, so the run's model.onnx is untouched); then CPU time per image of each ONNX model
alone (ONNX Runtime, one thread, batches of 32, the run's validation images decoded once),
float and int8 alternating over ``--repeats`` rounds, the best round of each kept. A run where
int8 loses more than --int8-max-loss is reported as refused (the export's own line).

    graft fit ../shared/datasets/flowers17 -o runs/flowers17
    graft fit ../shared/datasets/hymenoptera/train --val ../shared/datasets/hymenoptera/val -o runs/hymenoptera
    python bench/bench_export_int8.py runs/flowers17 runs/hymenoptera    # a few minutes each on 2 cores
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import save_rows, scratch_folder


def cpu_ms_per_image(session, rows, batch: int = 32) -> float:
    start = time.process_time()
    for i in range(0, len(rows), batch):
        session.run(["probabilities"], {"images": rows[i:i + batch]})
    return 1000 * (time.process_time() - start) / len(rows)


def bench_run(run: Path, folder: Path, repeats: int, calibration: int) -> dict:
    import onnx

    from graft._io.onnx import ort_session
    from graft.artifacts.export import export_model
    from graft.artifacts.exports.images import input_rows, split_rows
    from graft.errors import GraftError
    from graft.recipes.settings import ExportConfig

    float_path, int8_path = folder / f"{run.name}.onnx", folder / f"{run.name}.int8.onnx"
    export_model(ExportConfig(run_dir=str(run), out=str(float_path)))
    try:
        lines = export_model(ExportConfig(run_dir=str(run), out=str(int8_path), int8=True,
                                          calibration_images=calibration))
    except GraftError as refused:
        return {"run": str(run), "refused": str(refused)}
    meta = {p.key: p.value for p in onnx.load(str(int8_path), load_external_data=False).metadata_props}
    check = json.loads(meta["graft.quantization"])
    preprocessing = json.loads(meta["graft.preprocessing"])
    rows, _ = input_rows([p for p, _ in split_rows(run, "val")], preprocessing, "float")
    sessions = {"float": ort_session(float_path, threads=1), "int8": ort_session(int8_path, threads=1)}
    for session in sessions.values():  # warm up: first runs allocate
        session.run(["probabilities"], {"images": rows[:32]})
    best = {name: float("inf") for name in sessions}
    for _ in range(repeats):
        for name, session in sessions.items():
            best[name] = min(best[name], cpu_ms_per_image(session, rows))
    return {"run": str(run), "export_line": lines[1], "images": check["images"],
            "float_accuracy": check["float_accuracy"], "int8_accuracy": check["int8_accuracy"],
            "points": 100 * (check["int8_accuracy"] - check["float_accuracy"]),
            "float_ms": best["float"], "int8_ms": best["int8"], "speedup": best["float"] / best["int8"],
            "float_mb": float_path.stat().st_size / 2**20, "int8_mb": int8_path.stat().st_size / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="graft fit run folders (with split.csv)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calibration-images", type=int, default=64)
    parser.add_argument("--json", help="Also write the rows here.")
    args = parser.parse_args()
    rows = []
    with scratch_folder("bench-export-int8-") as folder:
        for run in args.runs:
            rows.append(bench_run(run, folder, args.repeats, args.calibration_images))
    print("| run | val images | float acc | int8 acc | change (points) | float ms/img | int8 ms/img | "
          "int8/float speed-up | MB float -> int8 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "refused" in r:
            print(f"| {Path(r['run']).name} | refused: {r['refused']} |")
            continue
        print(f"| {Path(r['run']).name} | {r['images']} | {r['float_accuracy']:.4f} | {r['int8_accuracy']:.4f} | "
              f"{r['points']:+.2f} | {r['float_ms']:.2f} | {r['int8_ms']:.2f} | {r['speedup']:.2f}x | "
              f"{r['float_mb']:.1f} -> {r['int8_mb']:.1f} |")
    save_rows(rows, args.json)


if __name__ == "__main__":
    main()
