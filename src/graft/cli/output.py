"""What the commands print: a run's summary."""
from __future__ import annotations

from pathlib import Path

import click


def print_summary(directory: Path, metrics: dict, scored_on: str = "validation") -> None:
    click.echo((directory / "report.txt").read_text())
    top = "".join(f"  top-{k} {v:.4f}" for k, v in metrics.get("top_k_accuracy", {}).items())
    click.echo(f"{scored_on}: accuracy {metrics['accuracy']:.4f}  macro F1 {metrics['macro_f1']:.4f}{top}  "
               f"n_train {metrics.get('n_train', '-')}  n_val {metrics['n_val']}  "
               f"{metrics['seconds']:.1f} s  skipped {len(metrics['skipped'])}")
    if "test" in metrics:
        test = metrics["test"]
        top = "".join(f"  top-{k} {v:.4f}" for k, v in test.get("top_k_accuracy", {}).items())
        click.echo(f"test (scored once, model chosen on validation): accuracy {test['accuracy']:.4f}  "
                   f"macro F1 {test['macro_f1']:.4f}{top}  n_test {test['n_test']}  (reports in {directory / 'test'})")
    if metrics.get("final_refit"):
        click.echo("the saved model was refitted on training + validation images (--final); the validation "
                   "scores above are those of the model fitted without them")
    written = [name for name in ("metrics.json", "report.txt", "confusion_matrix.png", "predictions.csv",
                                 "report.html", "config.yaml", "model/") if (directory / name).exists()]
    click.echo(f"wrote {directory}/: {' '.join(written)}")


def print_tasks(directory: Path, metrics: dict, scored_on: str = "validation") -> None:
    """A multi-task run: each task's scores, then the mean."""
    for task, m in metrics["tasks"].items():
        click.echo(f"{task}: accuracy {m['accuracy']:.4f}  macro F1 {m['macro_f1']:.4f}  n_train {m['n_train']}  "
                   f"n_val {m['n_val']}  (reports in {directory / task})")
    click.echo(f"mean accuracy {metrics['accuracy']:.4f}  {metrics['seconds']:.1f} s  skipped {len(metrics['skipped'])}  "
               f"model: {directory / 'model'}")
