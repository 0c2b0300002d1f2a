"""Callbacks: what the training loop does besides training (Lightning's Callback split).

The :class:`~graft.train.trainer.Trainer` calls every callback's hooks in list order:

- ``on_fit_start(trainer)``: after the method's setup and, when resuming, after the trainer
  and every callback restored their state (``trainer.state.resumed_epoch`` is then set);
- ``on_stage_start(trainer, run)``: the stage's optimizer is built; a hook may replace what
  the stage trains and validates on (``run``: a :class:`StageRun`);
- ``on_before_backward(trainer, loss)``: every training step, before its gradients;
- ``on_epoch_end(trainer, row)``: the epoch's history row is complete and
  ``trainer.state`` says whether it improved on the best epoch;
- ``on_fit_end(trainer)``: after the last epoch (under DDP, after every process got there).

``state_dict()`` adds a callback's own entries to the resume checkpoint (flat keys, so
checkpoints keep the layout older runs were written with); ``load_state_dict(checkpoint)``
reads them back. Only rank 0 writes files.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from graft._io.files import atomic_path, read_json_lines
from graft.errors import GraftError
from graft.train.distributed import is_main_process
from graft.train.stages import Stage


@dataclass
class StageRun:
    """One stage as the loop runs it. ``on_stage_start`` hooks may replace ``forward`` (inputs
    of ``train_loader`` -> logits), ``train_loader``, ``evaluated`` (the model scored on
    ``val_loader``) and ``val_loader``, and say what they did in the ``frozen_*`` fields,
    which every epoch's history row reports."""
    index: int
    stage: Stage
    augmented: bool
    images_loader: object  # the stage's image loader (its sampler is reshuffled per epoch)
    train_loader: object
    val_loader: object
    forward: nn.Module
    evaluated: nn.Module
    frozen_units_reused: int = 0  # plain stages: leading units replaced by cached outputs
    frozen_units_onnx: int = 0  # augmented stages: leading units run in ONNX Runtime
    frozen_engine: str | None = None  # "onnx", "torch", "cache" or None
    encode_seconds: float = 0.0  # the stage's one pass of its frozen layers


class Callback:
    """Override the hooks you need; every default does nothing."""

    def on_fit_start(self, trainer) -> None:
        pass

    def on_stage_start(self, trainer, run: StageRun) -> None:
        pass

    def on_before_backward(self, trainer, loss: torch.Tensor) -> None:
        pass

    def on_epoch_end(self, trainer, row: dict) -> None:
        pass

    def on_fit_end(self, trainer) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, checkpoint: dict) -> None:
        pass


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


class Checkpoint(Callback):
    """``directory/best.pt`` (the weights of the best epoch so far, its epoch and validation
    accuracy) and ``directory/last.pt`` (everything :meth:`Trainer.fit` needs to continue
    exactly: weights, optimizer, schedule, position in the plan, best so far, random states,
    the method's and the callbacks' state), each written atomically after every epoch.

    At the end the model is given the best epoch's weights back, unless ``keep_last`` (a
    final refit has no held-out set; adaptation selects no epoch on source validation).
    """

    def __init__(self, directory: Path, keep_last: bool = False):
        self.directory, self.keep_last = Path(directory), keep_last

    @property
    def best_path(self) -> Path:
        return self.directory / "best.pt"

    def on_fit_start(self, trainer) -> None:
        if is_main_process():
            self.directory.mkdir(parents=True, exist_ok=True)

    def on_epoch_end(self, trainer, row: dict) -> None:
        if not is_main_process():
            return
        weights = {k: v.detach().clone() for k, v in trainer.network.model.state_dict().items()}
        state = trainer.state
        if state.improved:
            _save_atomic({"model": weights, "epoch": state.epoch, "val_accuracy": row["val_accuracy"]},
                         self.best_path)
        _save_atomic(trainer.checkpoint_state(weights), self.directory / "last.pt")

    def on_fit_end(self, trainer) -> None:
        if trainer.state.best_epoch > 0 and not self.keep_last:
            trainer.network.model.load_state_dict(load_checkpoint(self.best_path)["model"])
            trainer.state.kept_epoch = trainer.state.best_epoch


class EarlyStopping(Callback):
    """Stop after ``patience`` epochs in a row without a better validation accuracy (None:
    never; the count is still kept, and checkpointed as ``stale``)."""

    def __init__(self, patience: int | None = None):
        self.patience, self.stale = patience, 0

    def _check(self, trainer) -> None:
        if self.patience is not None and self.stale >= self.patience:
            trainer.state.should_stop = True

    def on_fit_start(self, trainer) -> None:
        self._check(trainer)  # a resumed run that had already run out of patience

    def on_epoch_end(self, trainer, row: dict) -> None:
        self.stale = 0 if trainer.state.improved else self.stale + 1
        self._check(trainer)

    def state_dict(self) -> dict:
        return {"stale": self.stale}

    def load_state_dict(self, checkpoint: dict) -> None:
        self.stale = checkpoint["stale"]


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


class NonFiniteLossGuard(Callback):
    """Stop with one clear line when a step's loss is NaN or infinite (the learning rate is
    too high, most often), naming ``best_path``, the best checkpoint kept so far, when there is one."""

    def __init__(self, best_path: Path):
        self.best_path = Path(best_path)

    def on_before_backward(self, trainer, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            kept = f"; the best checkpoint so far is kept in {self.best_path}" if self.best_path.exists() else \
                "; no epoch finished, so no model is kept"
            raise GraftError(f"training diverged: the loss became {loss.item()} in stage "
                             f"{trainer.stage_run.stage.name}, epoch {trainer.state.epoch + 1}: use --lr auto (an LR "
                             f"range test picks it) or a smaller --lr{kept}")


class DivergenceGuard(Callback):
    """Stop with one clear line when an epoch's mean training loss, or its validation loss, is
    non-finite or far above chance: more than ``factor`` times a uniform guess's cross-entropy,
    ln(classes) (at least 1), times the method's ``loss_scale`` for the training loss (the
    validation loss is plain cross-entropy). Such a run (the learning rate is too high) can
    still score well on validation while its probabilities are all 0 or 1, or score as a
    constant guess, so it must not end as a success. Runs before the checkpoint, which then
    keeps the last sound epoch; the run ends with this error and no model is written."""

    def __init__(self, factor: float = 10.0):
        self.factor = factor

    def on_epoch_end(self, trainer, row: dict) -> None:
        import math

        classes = len(getattr(trainer.network.model, "classes", ()) or ()) or 2
        chance = max(math.log(classes), 1.0)
        for name, scale in (("train", getattr(trainer.method, "loss_scale", 1.0)), ("validation", 1.0)):
            loss = row["train_loss" if name == "train" else "val_loss"]
            if math.isfinite(loss) and loss <= self.factor * chance * scale:
                continue
            raise GraftError(f"training diverged: {name} loss {loss:.3g} in stage {row['stage']}, epoch "
                             f"{row['epoch']} is far above chance ({chance * scale:.2f}, a uniform guess over "
                             f"{classes} classes) at learning rate {max(row['lrs']):.3g}: use --lr auto (an LR range "
                             "test picks it) or a smaller --lr; no model is written")


class FrozenPrefix(Callback):
    """While a stage trains only the top of the network, its frozen leading layers need not
    run in torch every epoch (mechanics: :mod:`graft.train.prefix`):

    - plain stages: their outputs on the training and validation images are computed once
      per stage, and the epochs train the rest on them (``encode_pooled(dataset)``, when
      given, supplies a wholly frozen trunk's pooled outputs, e.g. from graft's feature
      cache);
    - augmented stages (``in_onnx``): the prefix runs in ONNX Runtime on every batch.

    A stage's loaders may be dicts of named loaders (a multi-task method's tasks): each task's
    frozen outputs are cached, and one trainable suffix serves them all.

    Off under DDP and for methods that need the images themselves (``needs_images``). The
    random stream of the run is the same with or without it (the encoding runs under a forked
    RNG), so the losses match the plain path's and resumed runs repeat uninterrupted ones.
    """

    def __init__(self, encode_pooled=None, in_onnx: bool = True):
        self.encode_pooled, self.in_onnx = encode_pooled, in_onnx

    def on_stage_start(self, trainer, run: StageRun) -> None:
        from graft.train import prefix  # looked up per call: the public functions stay patchable

        if trainer.settings.distributed or trainer.method.needs_images:
            return
        if run.augmented and not self.in_onnx:
            return
        network, progress = trainer.network, trainer.settings.progress
        started = time.perf_counter()
        # Iterating a loader without its own generator draws a seed from torch's global RNG;
        # forking keeps the training run's random stream the same whether or not (and when)
        # the prefix is encoded, so resumed runs repeat uninterrupted ones exactly.
        with torch.random.fork_rng(devices=[]):
            if run.augmented:
                found = prefix.onnx_prefix_stage(network.trunk, network.head, run.images_loader, run.val_loader,
                                                 progress)
            else:
                found = prefix.cached_prefix_loaders(network.trunk, network.head, run.images_loader,
                                                     run.val_loader, trainer.data.generator, progress,
                                                     self.encode_pooled)
        run.encode_seconds = round(time.perf_counter() - started, 3)
        if found is None:
            return
        if run.augmented:
            run.forward, run.evaluated, run.val_loader, run.frozen_units_onnx = found
            run.frozen_engine = "onnx"
        else:
            run.forward, run.train_loader, run.val_loader, run.frozen_units_reused = found
            run.evaluated = run.forward
            loaders = run.train_loader if isinstance(run.train_loader, dict) else {None: run.train_loader}
            run.frozen_engine = getattr(next(iter(loaders.values())).dataset, "engine", None)


def standard_callbacks(checkpoint_dir: Path, history_path: Path, *, patience: int | None = None,
                       keep_last: bool = False, frozen_prefix: FrozenPrefix | None = None) -> list[Callback]:
    """What every graft training run uses, in the order they must run: the divergence guard
    (before a diverged epoch is saved), early stopping (its count goes into the checkpoint),
    checkpoints, the history line, the non-finite loss guard, and the frozen-prefix stage hook
    (``FrozenPrefix()`` unless given)."""
    checkpoint = Checkpoint(checkpoint_dir, keep_last=keep_last)
    return [DivergenceGuard(), EarlyStopping(patience), checkpoint, HistoryWriter(history_path),
            NonFiniteLossGuard(checkpoint.best_path), frozen_prefix or FrozenPrefix()]
