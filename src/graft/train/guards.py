"""Guards that end a diverged run with one clear line instead of a model trained on nonsense."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from graft.errors import GraftError
from graft.train.hooks import Callback


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
    ln(classes) (at least 1), times the method's ``loss_scale`` for the training loss less its
    ``conservation_loss`` (the regularizer's, on the scale its weight sets; the validation loss
    is plain cross-entropy). Such a run (the learning rate is too high) can
    still score well on validation while its probabilities are all 0 or 1, or score as a
    constant guess, so it must not end as a success. Runs before the checkpoint, which then
    keeps the last sound epoch; the run ends with this error and no model is written."""

    def __init__(self, factor: float = 10.0):
        self.factor = factor

    def on_epoch_end(self, trainer, row: dict) -> None:
        classes = len(getattr(trainer.network.model, "classes", ()) or ()) or 2
        chance = max(math.log(classes), 1.0)
        # a conservation term (L2-SP, LwF, BSS) is on its own scale, set by its weight: a large
        # weight is not divergence, so the training loss is judged without it (if it is finite)
        conservation = row.get("conservation_loss", 0.0)
        task_loss = row["train_loss"] - conservation if math.isfinite(conservation) else math.inf
        for name, scale in (("train", getattr(trainer.method, "loss_scale", 1.0)), ("validation", 1.0)):
            loss = task_loss if name == "train" else row["val_loss"]
            if math.isfinite(loss) and loss <= self.factor * chance * scale:
                continue
            raise GraftError(f"training diverged: {name} loss {loss:.3g} in stage {row['stage']}, epoch "
                             f"{row['epoch']} is far above chance ({chance * scale:.2f}, a uniform guess over "
                             f"{classes} classes) at learning rate {max(row['lrs']):.3g}: use --lr auto (an LR range "
                             "test picks it) or a smaller --lr; no model is written")
