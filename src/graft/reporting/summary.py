"""The few lines a command prints after a run: the per-class table, then the scores and where
the run's files are (what ``graft fit``, ``finetune``, ``resume``... show at the end)."""
from __future__ import annotations

from pathlib import Path


def _scores(metrics: dict, counts: str) -> str:
    top = "".join(f"  top-{k} {v:.4f}" for k, v in metrics.get("top_k_accuracy", {}).items())
    return f"accuracy {metrics['accuracy']:.4f}  macro F1 {metrics['macro_f1']:.4f}{top}  {counts}"


def run_summary(directory: Path, metrics: dict, scored_on: str = "validation") -> str:
    """report.txt, the validation (and test) scores, and the files written into ``directory``."""
    lines = [(directory / "report.txt").read_text(),
             f"{scored_on}: " + _scores(metrics, f"n_train {metrics.get('n_train', '-')}  n_val {metrics['n_val']}  "
                                                 f"{metrics['seconds']:.1f} s  skipped {len(metrics['skipped'])}")]
    if "test" in metrics:
        test = metrics["test"]
        lines.append("test (scored once, model chosen on validation): "
                     + _scores(test, f"n_test {test['n_test']}  (reports in {directory / 'test'})"))
    if metrics.get("final_refit"):
        lines.append("the saved model was refitted on training + validation images (--final); the validation "
                     "scores above are those of the model fitted without them")
    written = [name for name in ("metrics.json", "report.txt", "confusion_matrix.png", "predictions.csv",
                                 "report.html", "config.yaml", "model/") if (directory / name).exists()]
    lines.append(f"wrote {directory}/: {' '.join(written)}")
    return "\n".join(lines)


def training_summary(directory: Path, metrics: dict, scored_on: str | None = None) -> str:
    """A run's summary (per task for a multi-task run), then what only some runs have: the
    target domain's scores, the proxy A-distance, the training curves. Empty for no metrics (a
    non-zero rank under torchrun: rank 0 reports)."""
    if not metrics:
        return ""
    if "summary" in metrics:  # a run that scores no model (audit, zeroshot): the lines it chose
        return metrics["summary"]
    if "tasks" in metrics:
        lines = [f"{task}: " + _scores(m, f"n_train {m['n_train']}  n_val {m['n_val']}  (reports in "
                                          f"{directory / task})") for task, m in metrics["tasks"].items()]
        return "\n".join(lines + [f"mean accuracy {metrics['accuracy']:.4f}  {metrics['seconds']:.1f} s  "
                                  f"skipped {len(metrics['skipped'])}  model: {directory / 'model'}"])
    lines = [run_summary(directory, metrics, scored_on or ("source validation" if "adversary" in metrics
                                                           else "validation"))]
    if metrics.get("target"):
        target = metrics["target"]
        lines.append(f"target ({target['data_dir']}): accuracy {100 * target['accuracy']:.1f} %  "
                     f"macro F1 {target['macro_f1']:.3f}")
    lines += [f"{key.replace('_', ' ')}: {metrics[key]:.3f}" for key in ("proxy_a_distance_before",
                                                                         "proxy_a_distance_after") if key in metrics]
    if (directory / "history.jsonl").exists():
        lines.append(f"history: {directory / 'history.jsonl'}  curves: {directory / 'curves.png'}")
    return "\n".join(lines)


def validation_title(val_root, train_root, how: str) -> str:
    """The confusion matrix's title for the validation images: the folder scored, not the one
    trained on: "validation: VAL (how)", or "validation: held out of TRAIN (how)" when the
    validation images are a split of the training folder."""
    from pathlib import Path

    val_root, train_root = Path(str(val_root)), Path(str(train_root))
    held_out = val_root.resolve() == train_root.resolve()
    return f"validation: {'held out of ' if held_out else ''}{val_root.name} ({how})"
