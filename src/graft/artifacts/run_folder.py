"""The run folder: everything one fit or evaluation leaves behind, in one place.

    RUN_DIR/config.yaml           resolved settings
    RUN_DIR/model/                the model artifact (graft.json + weights.safetensors)
    RUN_DIR/metrics.json          accuracy, macro_f1, per_class, n_train, n_val, seconds, skipped
    RUN_DIR/report.txt            per-class precision/recall/F1 table
    RUN_DIR/confusion_matrix.png
    RUN_DIR/eval/<data>/          the same three files for each ``graft evaluate``

A run folder belongs to one command. :func:`open_run` refuses to write a new run over a folder
that holds something else (another command's run, a resumable fine-tuning, a user's files),
and with ``overwrite`` clears only graft's own outputs (:data:`GRAFT_OUTPUTS`), never other
files. :class:`RunLock` keeps two processes from training into the same folder.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from pathlib import Path

from graft._io.files import current_umask, json_safe, write_atomic
from graft.errors import GraftError
from graft.reporting.html import write_html_report
from graft.reporting.metrics import Scored, classification_metrics, top_k_accuracy
from graft.reporting.plots import confusion_matrix_png
from graft.reporting.tables import (
    PREDICTION_COLUMNS,
    predictions_csv,
    read_predictions,
    report_text,
    write_predictions,
    write_split,
)

# predictions.csv's writer and reader and top-k accuracy moved to graft.reporting; their old home keeps the names
__all__ = ["GRAFT_OUTPUTS", "LOCK_FILE", "PREDICTION_COLUMNS", "RunDir", "RunLock", "Scored", "open_run",
           "read_predictions", "top_k_accuracy", "write_html_safely", "write_predictions"]

# Everything a graft command writes into a run folder; --overwrite removes these and nothing else.
GRAFT_OUTPUTS = ("model", "model.onnx", "config.yaml", "metrics.json", "report.txt", "confusion_matrix.png",
                 "history.jsonl", "history-final.jsonl", "curves.png", "checkpoints", "eval", "lr_find.png",
                 "lr_find.json", "data.json", "predictions.csv", "split.csv", "test", "report.html", "advice.json",
                 "target", "domain.json", "clusters.csv", "selected.csv")
LOCK_FILE = ".graft.lock"
# What graft writes inside those folders (model/, checkpoints/[final/], eval/NAME/, test/, target/).
INNER_OUTPUTS = ("graft.json", "weights.safetensors", "novelty.safetensors", "best.pt", "last.pt", "metrics.json",
                 "report.txt", "confusion_matrix.png", "predictions.csv", "report.html")


def _written_by_graft(name: str) -> bool:
    return name in INNER_OUTPUTS or (name.startswith(".") and name.endswith(".tmp"))  # a crashed atomic write


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GraftError(f"cannot create run folder {self.path}: {exc.strerror or exc}") from None

    def lock(self, command: str) -> "RunLock":
        """The folder's lock: the one :func:`open_run` already holds, or a new one to acquire."""
        held, self.held_lock = getattr(self, "held_lock", None), None
        return held if held is not None else RunLock(self.path, command)

    def saved_command(self) -> str | None:
        """The command named in this folder's config.yaml, or None."""
        import yaml

        try:
            config = yaml.safe_load((self.path / "config.yaml").read_text()) or {}
        except (OSError, yaml.YAMLError):
            return None
        return config.get("command") if isinstance(config, dict) else None

    def clear_outputs(self) -> list[str]:
        """Remove graft's own outputs (and nothing else); returns the names removed. Refused
        (GraftError, before anything is removed) when one of graft's folders (model/,
        checkpoints/, eval/, test/, target/) holds a file graft does not write there."""
        foreign = [str(path.relative_to(self.path)) for name in GRAFT_OUTPUTS if (self.path / name).is_dir()
                   and not (self.path / name).is_symlink() for path in sorted((self.path / name).rglob("*"))
                   if not path.is_dir() and not _written_by_graft(path.name)]
        if foreign:
            raise GraftError(f"--overwrite removes only what graft wrote, and {self.path} holds other files inside "
                             f"graft's folders: {_names(foreign)}; move them out of the run folder first")
        removed = []
        for name in GRAFT_OUTPUTS:
            target = self.path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            else:
                continue
            removed.append(name)
        return removed

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    def write_config(self, settings: dict) -> Path:
        import yaml

        return write_atomic(self.path / "config.yaml", yaml.safe_dump(json_safe(settings), sort_keys=False))

    def write_report(self, scored: Scored, extra: dict, subdir: str | None = None, title: str = "",
                     held_out: dict | None = None) -> dict:
        """Write an evaluation's files into the run folder (or ``RUN/subdir``): metrics.json
        (:func:`graft.reporting.metrics.classification_metrics` plus ``extra``), report.txt and
        confusion_matrix.png (titled ``title``), and, when ``scored`` has probabilities, top-k
        accuracy in metrics.json and (with paths) predictions.csv. Returns the metrics written.

        ``held_out``: ``{name: (Scored, extra, title)}`` of folders held out from training (a test
        folder) that the same model scored: each gets the same files in ``RUN/<name>/``, and this
        metrics.json keeps its summary under ``name`` (:func:`held_out_summary`). Every file's
        content is computed before the first is written, and each metrics.json is written last
        (its presence says the evaluation's files are all there)."""
        held = {name: _page(self.path / name, *item) for name, item in (held_out or {}).items()}
        main = _page(self.path / subdir if subdir else self.path, scored, extra, title)
        main["metrics"].update({name: held_out_summary(page["metrics"]) for name, page in held.items()})
        for page in [*held.values(), main]:
            for path, text in page["files"]:
                write_atomic(path, text)
            write_atomic(page["target"] / "metrics.json", json.dumps(json_safe(page["metrics"]), indent=2) + "\n")
        return main["metrics"]

    def write_split(self, train, val) -> Path:
        """split.csv: every image of the run and whether it trained or validated, so a
        ``--val-split`` can be inspected and reproduced (:func:`graft.reporting.tables.write_split`)."""
        return write_split(self.path / "split.csv", train, val)


def _page(target: Path, scored: Scored, extra: dict, title: str) -> dict:
    """One evaluation's files, computed: its metrics, report.txt and predictions.csv texts (the
    confusion matrix is drawn into ``target`` here). Nothing else is written."""
    target.mkdir(parents=True, exist_ok=True)
    y_true, y_pred, classes = scored.y_true, scored.y_pred, scored.classes
    metrics = classification_metrics(y_true, y_pred, classes)
    if scored.probabilities is not None:
        metrics["top_k_accuracy"] = top_k_accuracy(y_true, scored.probabilities)
    metrics.update(extra)
    files = [(target / "report.txt", report_text(y_true, y_pred, classes, metrics))]
    confusion_matrix_png(y_true, y_pred, classes, target / "confusion_matrix.png", title)
    if scored.probabilities is not None and scored.paths is not None:
        files.insert(0, (target / "predictions.csv", predictions_csv(scored.paths, y_true, scored.probabilities,
                                                                     classes, scored.split)))
    return {"target": target, "metrics": metrics, "files": files}


def held_out_summary(metrics: dict) -> dict:
    """What metrics.json keeps of a held-out (test) evaluation beside the validation numbers."""
    keys = ("accuracy", "macro_f1", "top_k_accuracy", "n_test", "n_target_val", "data_dir")
    return {k: metrics[k] for k in keys if k in metrics}


def write_html_safely(run_dir: Path, subdir: str | None = None) -> Path | None:
    """report.html for a finished evaluation; a failure only warns (the results are on disk)."""
    try:
        return write_html_report(run_dir, subdir)
    except Exception as exc:  # the page is a view of files already written: never fail the run for it
        warnings.warn(f"could not write report.html in {Path(run_dir) / (subdir or '')}: {type(exc).__name__}: {exc}")
        return None


def open_run(path: str | Path, command: str, *, overwrite: bool = False) -> RunDir:
    """The run folder for a new run of ``command``, checked and made ready before any work.

    The folder's lock is taken first, so a second process fails before it removes or rewrites
    anything; the run holds it (``run.lock(command)`` hands it back) until released. Then:

    * missing or empty: created;
    * ``overwrite``: graft's own outputs are removed first, the user's other files stay;
    * a training run with checkpoints (finetune, pretrain, adapt, distill, multitask): refused
      (``graft resume`` or ``--overwrite``);
    * an earlier run of the same command: its outputs are replaced (nothing stale is left);
    * anything else (another command's run, files graft did not write): refused.

    The folder must be writable: that is checked here, not after an hour of training.
    """
    created = not Path(path).exists()
    run = RunDir(path)
    held = run.lock(command).acquire()
    held.created_folder = created
    try:
        _check_replaceable(run, command, overwrite)
        _check_writable(run.path)
    except BaseException:
        held.release()
        raise
    run.held_lock = held
    return run


def check_run_folder(path: str | Path, commands: tuple[str, ...], *, overwrite: bool = False) -> None:
    """What :func:`open_run` would refuse, said before a long analysis (``graft auto``), with
    nothing removed and the lock let go at once: ``path`` is in use, holds another command's
    run, a finished or resumable one, or files graft did not write (without ``overwrite``), or
    cannot be written. ``commands``: those that may write it (auto's winner: fit or finetune)."""
    path = Path(path)
    if not path.exists():
        parent = next(p for p in path.absolute().parents if p.exists())
        if not os.access(parent, os.W_OK):
            raise GraftError(f"cannot create run folder {path}: {parent} is not writable")
        return
    if not path.is_dir():
        raise GraftError(f"-o {path} is a file, not a folder")
    RunLock(path, commands[0]).acquire().release()
    run = RunDir(path)
    _check_replaceable(run, run.saved_command() if run.saved_command() in commands else commands[0], overwrite,
                       clear=False)
    _check_writable(run.path)


def _check_replaceable(run: RunDir, command: str, overwrite: bool, clear: bool = True) -> None:
    entries = [e.name for e in run.path.iterdir() if e.name != LOCK_FILE]
    if entries and not overwrite:
        previous = run.saved_command()
        if previous == command and (run.path / "checkpoints" / "last.pt").exists() \
                and (run.path / "metrics.json").exists():
            raise GraftError(f"{run.path} holds a finished {command} run (metrics.json written, nothing to resume): "
                             "choose another -o, or pass --overwrite to replace it")
        if previous == command and (run.path / "checkpoints" / "last.pt").exists():
            raise GraftError(f"{run.path} holds a {command} run with checkpoints: continue it with "
                             f"`graft resume {run.path}` (or --resume {run.path}), or start over with --overwrite")
        if previous != command:
            what = f"a graft {previous} run" if previous else \
                f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} graft did not write ({_names(entries)})"
            raise GraftError(f"output folder {run.path} is not empty: it holds {what}. Choose another -o, "
                             "or pass --overwrite (graft's own outputs are removed, other files are kept)")
    if entries and clear:
        run.clear_outputs()


def _names(entries: list[str], most: int = 3) -> str:
    shown = ", ".join(sorted(entries)[:most])
    return shown + (f", ... {len(entries) - most} more" if len(entries) > most else "")


def _check_writable(directory: Path) -> None:
    probe = directory / f".graft-write-test-{os.getpid()}"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise GraftError(f"cannot write to run folder {directory}: {exc.strerror or exc}") from None


class RunLock:
    """An exclusive ``flock`` on ``RUN/.graft.lock`` while one process trains into the folder.

    The lock file names its holder (PID, command, start time). The kernel drops a flock when
    its process dies, so a lock left by a killed process is free: the next run takes it over
    and says so. ``release`` empties the file, so an orderly finish leaves nothing to report.
    """

    def __init__(self, directory: Path, command: str):
        self.path = Path(directory) / LOCK_FILE
        self.command = command
        self._fd: int | None = None
        self.created_folder = False  # set by open_run: the run made the folder (removed if it fails empty)

    def acquire(self) -> "RunLock":
        import fcntl

        if self._fd is not None:  # already held (taken by open_run before it touched the folder)
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").split()
            os.close(fd)
            pid = holder[0] if holder else "unknown"
            what = f" ({holder[1]}, since {holder[2]})" if len(holder) >= 3 else ""
            raise GraftError(f"{self.path.parent} is in use by another graft process: pid {pid}{what}. "
                             "Wait for it to finish, or choose another -o") from None
        stale = os.pread(fd, 200, 0).decode(errors="replace").split()
        if stale and stale[0] != str(os.getpid()):
            warnings.warn(f"{self.path.parent}: taking over the lock of process {stale[0]}, which ended "
                          "without releasing it (killed?)")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.command} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        import fcntl

        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, exc_type, *exc) -> None:
        self.release()
        if exc_type is not None and self.created_folder:
            _remove_if_only_the_lock(self.path.parent)


def _remove_if_only_the_lock(folder: Path) -> None:
    """A run that failed in a folder it created, before writing anything, leaves no empty
    folder behind (the next try with the same -o would otherwise meet a folder it must check)."""
    try:
        if [entry.name for entry in folder.iterdir()] == [LOCK_FILE]:
            (folder / LOCK_FILE).unlink()
            folder.rmdir()
    except OSError:  # another process wrote into it meanwhile: leave it as it is
        pass
