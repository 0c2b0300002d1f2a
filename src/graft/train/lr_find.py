"""Learning-rate range test (Smith, "Cyclical Learning Rates for Training Neural Networks",
WACV 2017; popularised by fastai's ``lr_find``).

Train for a few hundred steps while the LR grows exponentially from ``start`` to ``end``,
record the loss, stop once it diverges, then put the weights back. The suggestion is the LR
where the smoothed loss falls fastest per decade of LR, taken before the loss minimum: large
enough to learn quickly, still well below where training blows up.

Two smoothings: a running (causal) mean decides when to stop, because it is all that is known
during the sweep; the curve that is plotted and searched is a centred moving average of the
raw losses, which, unlike the running mean, does not lag behind the LR by several steps.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from torch import nn
from torch.nn import functional as F

from graft._io.progress import progress_bar
from graft.errors import GraftError

RUNNING_MEAN = 0.95  # weight of the past in the running loss that decides when to stop
DIVERGED = 4.0  # stop once the running loss exceeds this many times its lowest value


@dataclass
class LRSweep:
    lrs: list[float]          # head LR at each step (backbone groups keep their ratio to it)
    losses: list[float]       # centred moving average of the training loss at each step
    raw_losses: list[float]
    suggestion: float         # steepest descent of the smoothed loss, before its minimum
    min_loss_lr: float        # LR at the smoothed loss minimum (the classic rule: use a tenth of it)
    stopped_early: bool       # True when the loss diverged before ``end``

    def text(self) -> str:
        """Two lines: the range swept, and the suggestion."""
        stopped = " (loss diverged there)" if self.stopped_early else ""
        return (f"swept {self.lrs[0]:.2g} .. {self.lrs[-1]:.2g} over {len(self.lrs)} steps{stopped}\n"
                f"suggested lr {self.suggestion:.3g}  (steepest descent; lowest loss at {self.min_loss_lr:.3g})")

    def save(self, directory: Path) -> tuple[Path, Path]:
        """Write ``lr_find.json`` and ``lr_find.png`` (loss vs LR, log scale, suggestion marked)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        json_path, png_path = directory / "lr_find.json", directory / "lr_find.png"
        json_path.write_text(json.dumps(asdict(self), indent=1) + "\n")
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(self.lrs, self.raw_losses, color="lightgrey", linewidth=0.8, label="loss per step")
        ax.plot(self.lrs, self.losses, label="smoothed")
        ax.axvline(self.suggestion, color="red", linestyle="--", label=f"suggestion {self.suggestion:.2g}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (head)")
        ax.set_ylabel("training loss")
        top = np.nanmax(self.losses[: max(1, len(self.losses) // 10)] or [1.0])
        ax.set_ylim(min(self.losses) * 0.9, max(top, min(self.losses)) * 1.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(png_path, dpi=100)
        plt.close(fig)
        return json_path, png_path


def suggest(lrs: np.ndarray, smoothed: np.ndarray, skip: int) -> tuple[float, float]:
    """(steepest-descent LR before the minimum, LR at the minimum) of a smoothed loss curve."""
    lowest = int(np.argmin(smoothed[skip:])) + skip
    if lowest - skip < 2:  # the loss only rose: the range started too high
        return float(lrs[lowest]) / 10, float(lrs[lowest])
    slopes = np.gradient(smoothed[skip:lowest + 1], np.log10(lrs[skip:lowest + 1]))
    return float(lrs[skip + int(np.argmin(slopes))]), float(lrs[lowest])


def lr_sweep(forward: nn.Module, loader, make_optimizer, *, start: float = 1e-6, end: float = 1.0,
             steps: int = 100, progress: bool = True, class_weights=None) -> LRSweep:
    """Range-test ``forward`` on ``loader`` (cycled as often as needed), with the cross-entropy
    training uses (``class_weights``: per-class weights ``[classes]``, as ``--class-weight``).

    ``make_optimizer(lr)`` builds the optimizer with the head at ``lr`` (and every other group
    at its usual ratio to it); the sweep rescales all groups together. The weights, buffers and
    training mode of ``forward`` are restored afterwards.
    """
    if not 0 < start < end:
        raise GraftError(f"lr range must satisfy 0 < start < end, got {start} .. {end}")
    if steps < 5:
        raise GraftError(f"an LR sweep needs at least 5 steps, got {steps}")
    from graft.train.stages import set_train_mode

    saved = {k: v.detach().clone() for k, v in forward.state_dict().items()}
    modes = {module: module.training for module in forward.modules()}
    optimizer = make_optimizer(start)
    ratios = [g["lr"] / start for g in optimizer.param_groups]
    factor = (end / start) ** (1 / (steps - 1))
    lrs, raw = [], []
    average, best, stopped = 0.0, math.inf, False
    bar = progress_bar(steps, "lr sweep", "step", progress)
    batches = iter(loader)
    try:
        set_train_mode(forward)  # as in training: frozen BatchNorm keeps its running statistics
        for step in range(steps):
            lr = start * factor ** step
            for group, ratio in zip(optimizer.param_groups, ratios):
                group["lr"] = lr * ratio
            try:
                images, targets = next(batches)
            except StopIteration:
                batches = iter(loader)
                images, targets = next(batches)
            loss = F.cross_entropy(forward(images), targets, weight=class_weights)
            value = loss.item()
            if not math.isfinite(value):
                stopped = True
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            average = RUNNING_MEAN * average + (1 - RUNNING_MEAN) * value
            current = average / (1 - RUNNING_MEAN ** (step + 1))  # bias-corrected running mean
            lrs.append(lr)
            raw.append(value)
            best = min(best, current)
            bar.update(1)
            if step > steps // 10 and current > DIVERGED * best:
                stopped = True
                break
    finally:
        bar.close()
        forward.load_state_dict(saved)
        for module, mode in modes.items():
            module.training = mode
    if len(lrs) < 5:
        raise GraftError(f"the LR sweep diverged within {len(lrs)} steps: start lower than {start:g}")
    centred = centred_mean(np.array(raw), window=max(5, steps // 20))
    suggestion, min_loss_lr = suggest(np.array(lrs), centred, skip=max(1, len(lrs) // 10))
    return LRSweep(lrs=lrs, losses=centred.tolist(), raw_losses=raw, suggestion=suggestion,
                   min_loss_lr=min_loss_lr, stopped_early=stopped)


def centred_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Moving average over ``window`` points centred on each one (shorter at the ends)."""
    half = window // 2
    sums = np.concatenate([[0.0], np.cumsum(values)])
    lo = np.clip(np.arange(len(values)) - half, 0, len(values))
    hi = np.clip(np.arange(len(values)) + half + 1, 0, len(values))
    return (sums[hi] - sums[lo]) / (hi - lo)
