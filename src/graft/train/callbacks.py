"""Callbacks: what the training loop does besides training (Lightning's Callback split):
checkpoints and exact resume, early stopping, history.jsonl (here); the divergence guards
(:mod:`.guards`); staged unfreezing and the frozen-prefix shortcuts (:mod:`.freezing`). The
hooks and their order: :mod:`.hooks`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from graft._io.files import atomic_path, read_json_lines
from graft.errors import GraftError
from graft.train.distributed import is_main_process
from graft.train.freezing import FrozenPrefix, StagedUnfreezing
from graft.train.guards import DivergenceGuard, NonFiniteLossGuard
from graft.train.hooks import Callback, StageRun

__all__ = ["Callback", "Checkpoint", "DivergenceGuard", "EarlyStopping", "FrozenPrefix", "HistoryWriter", "Monitor",
           "NonFiniteLossGuard", "StageRun", "StagedUnfreezing", "load_checkpoint", "standard_callbacks"]


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by :class:`Checkpoint`; tensors and plain values only
    (``weights_only``). Raises :class:`GraftError` naming the file when it is missing or damaged."""
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise GraftError(f"cannot resume: {path} does not exist") from exc
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise GraftError(f"cannot resume: {path} is damaged or cut short ({str(exc).splitlines()[0][:120]}); "
                         "start the run again with --overwrite") from None


def _save_atomic(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class Monitor:
    """Which value of an epoch's history row selects or stops (``monitor``: ``val_accuracy``,
    ``val_loss``, or any number a method adds to the row) and which way is better (``mode``:
    ``max``, ``min``, or ``auto``: ``min`` for a name with ``loss`` in it, else ``max``), as
    Lightning's callbacks take them. Only a strictly better value improves (a tie keeps the
    earlier epoch); NaN never does. Raises :class:`GraftError` for another mode."""

    def __init__(self, monitor: str = "val_accuracy", mode: str = "auto"):
        if mode not in MODES:
            raise GraftError(f"mode {mode!r}: give one of {', '.join(MODES)}")
        self.name = monitor
        self.mode = mode if mode != "auto" else ("min" if "loss" in monitor else "max")

    @property
    def worst(self) -> float:
        """What every first value beats."""
        return math.inf if self.mode == "min" else -math.inf

    def better(self, value: float, best: float) -> bool:
        return value < best if self.mode == "min" else value > best

    def value(self, row: dict) -> float:
        """``row[monitor]``; one clear line naming the row's numbers when it has none."""
        value = row.get(self.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            numbers = [k for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
            raise GraftError(f"monitor {self.name!r}: the epoch's history row has no such number; "
                             f"give one of {', '.join(numbers)}")
        return float(value)

    def state(self) -> dict:
        return {"monitor": self.name, "mode": self.mode}


MODES = ("auto", "max", "min")


class Checkpoint(Callback):
    """``directory/best.pt`` (the weights of the best epoch so far by ``monitor``/``mode``
    (:class:`Monitor`; by default the highest validation accuracy), its epoch, validation
    accuracy and monitored value) and ``directory/last.pt`` (everything :meth:`Trainer.fit`
    needs to continue exactly: weights, optimizer, schedule, position in the plan, best so
    far, random states, the method's and the callbacks' state), each written atomically
    after every epoch. After each epoch it sets ``trainer.state.best_epoch``,
    ``best_accuracy`` (that epoch's validation accuracy) and ``improved``.

    At the end the model is given the best epoch's weights back, unless ``keep_last`` (a
    final refit has no held-out set; adaptation selects no epoch on source validation).
    Resuming a checkpoint kept by another monitor or mode raises :class:`GraftError`.
    """

    def __init__(self, directory: Path, keep_last: bool = False, monitor: str = "val_accuracy",
                 mode: str = "auto"):
        self.directory, self.keep_last = Path(directory), keep_last
        self.monitor = Monitor(monitor, mode)
        self.best_score, self.best_epoch, self.best_accuracy = self.monitor.worst, -1, -1.0

    @property
    def best_path(self) -> Path:
        return self.directory / "best.pt"

    def _publish(self, trainer, improved: bool) -> None:
        state = trainer.state
        state.best_epoch, state.best_accuracy, state.improved = self.best_epoch, self.best_accuracy, improved

    def on_fit_start(self, trainer) -> None:
        if is_main_process():
            self.directory.mkdir(parents=True, exist_ok=True)
        self._publish(trainer, False)

    def on_epoch_end(self, trainer, row: dict) -> None:
        value = self.monitor.value(row)
        improved = self.monitor.better(value, self.best_score)
        if improved:
            self.best_score, self.best_epoch, self.best_accuracy = value, row["epoch"], row["val_accuracy"]
        self._publish(trainer, improved)
        if not is_main_process():
            return
        weights = {k: v.detach().clone() for k, v in trainer.network.model.state_dict().items()}
        if improved:
            _save_atomic({"model": weights, "epoch": row["epoch"], "val_accuracy": row["val_accuracy"],
                          **self.monitor.state(), "score": value}, self.best_path)
        _save_atomic(trainer.checkpoint_state(weights), self.directory / "last.pt")

    def on_fit_end(self, trainer) -> None:
        if self.best_epoch > 0 and not self.keep_last:
            trainer.network.model.load_state_dict(load_checkpoint(self.best_path)["model"])
            trainer.state.kept_epoch = self.best_epoch

    def state_dict(self) -> dict:
        # flat keys, best_accuracy and best_epoch as checkpoints had them before monitors
        return {"best_accuracy": self.best_accuracy, "best_epoch": self.best_epoch, "best_score": self.best_score,
                **self.monitor.state()}

    def load_state_dict(self, checkpoint: dict) -> None:
        # checkpoints written before monitors kept the highest validation accuracy
        kept_by = (checkpoint.get("monitor", "val_accuracy"), checkpoint.get("mode", "max"))
        if kept_by != (self.monitor.name, self.monitor.mode):
            raise GraftError(f"cannot resume: the checkpoint kept epochs by {kept_by[0]} ({kept_by[1]}), this run "
                             f"by {self.monitor.name} ({self.monitor.mode})")
        self.best_accuracy, self.best_epoch = checkpoint["best_accuracy"], checkpoint["best_epoch"]
        self.best_score = checkpoint.get("best_score", self.best_accuracy)


class EarlyStopping(Callback):
    """Stop after ``patience`` epochs in a row without a better ``monitor`` value (a
    :class:`Monitor`; by default validation accuracy, higher is better) (None: never; the
    count is still kept, and checkpointed as ``stale``)."""

    def __init__(self, patience: int | None = None, monitor: str = "val_accuracy", mode: str = "auto"):
        self.patience, self.stale = patience, 0
        self.monitor = Monitor(monitor, mode)
        self.best = self.monitor.worst

    def _check(self, trainer) -> None:
        if self.patience is not None and self.stale >= self.patience:
            trainer.state.should_stop = True

    def on_fit_start(self, trainer) -> None:
        self._check(trainer)  # a resumed run that had already run out of patience

    def on_epoch_end(self, trainer, row: dict) -> None:
        value = self.monitor.value(row)
        if self.monitor.better(value, self.best):
            self.best, self.stale = value, 0
        else:
            self.stale += 1
        self._check(trainer)

    def state_dict(self) -> dict:
        return {"stale": self.stale, "stopping_best": self.best}

    def load_state_dict(self, checkpoint: dict) -> None:
        self.stale = checkpoint["stale"]
        # checkpoints written before monitors counted against the best validation accuracy
        self.best = checkpoint.get("stopping_best", checkpoint.get("best_accuracy", self.monitor.worst))


class HistoryWriter(Callback):
    """One JSON line per epoch in ``path`` (history.jsonl), written after the checkpoint (put
    it after :class:`Checkpoint`): a kill between the two loses the line, not the epoch. On
    resume the file is cut back to the checkpoint's epochs, which become the start of
    ``trainer.state.history``."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_fit_start(self, trainer) -> None:
        epochs = trainer.state.resumed_epoch
        if epochs is None:
            return
        rows = read_json_lines(self.path, needed=epochs) if self.path.exists() else []
        trainer.state.history[:0] = rows
        if is_main_process():
            self.path.write_text("".join(json.dumps(row) + "\n" for row in rows))

    def on_epoch_end(self, trainer, row: dict) -> None:
        if is_main_process():
            with open(self.path, "a") as handle:
                handle.write(json.dumps(row) + "\n")


def standard_callbacks(checkpoint_dir: Path, history_path: Path, *, patience: int | None = None,
                       keep_last: bool = False, frozen_prefix: FrozenPrefix | None = None,
                       monitor: str = "val_accuracy", mode: str = "auto") -> list[Callback]:
    """What every graft training run uses, in the order they must run: the divergence guard
    (before a diverged epoch is saved), early stopping (its count goes into the checkpoint),
    checkpoints, the history line, the non-finite loss guard, staged unfreezing and the
    frozen-prefix stage hook (``FrozenPrefix()`` unless given; after the unfreezing, which
    decides what is frozen). Early stopping and the checkpoint's best epoch follow
    ``monitor`` / ``mode`` (:class:`Monitor`)."""
    checkpoint = Checkpoint(checkpoint_dir, keep_last=keep_last, monitor=monitor, mode=mode)
    return [DivergenceGuard(), EarlyStopping(patience, monitor, mode), checkpoint, HistoryWriter(history_path),
            NonFiniteLossGuard(checkpoint.best_path), StagedUnfreezing(), frozen_prefix or FrozenPrefix()]
