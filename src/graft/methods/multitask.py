"""Multi-task training: one shared network, one head per task (the columns of a
:class:`~graft.heads.modules.MultiTaskHead`), a loss per task.

Two ways to draw (``sampling``):

- ``proportional`` (the default): each step is a batch of one task; the tasks' batches are
  interleaved evenly, so an epoch sees every image of every task once, in as many steps as
  the separate runs together. Each task's head gets the updates of its own run, and the run
  costs what the separate runs cost (proportional sampling, as in MT-DNN, Liu et al., ACL 2019).
- ``together``: every step takes one batch from every task (a task with fewer batches starts
  over, reshuffled, when it runs out), so a small task is seen as often as a large one; the
  batches go through the network as one.

With ``frozen_statistics`` every BatchNorm layer stays in eval mode while training: the
layers' weights train, their running statistics stay the pretrained ones. The trunk is shared,
and under proportional sampling most of a stage's batches are the largest task's, so
statistics that move would become that task's and shift every other task's features.

Task losses are summed with fixed weights, or with learned uncertainty weights (Kendall, Gal &
Cipolla, CVPR 2018): ``exp(-s_t) L_t + s_t / 2`` with ``s_t`` the log variance of task ``t``.

The engine hands the method ``{task: loader}`` dicts for training and validation. A stage whose
first layers are frozen gets loaders over their cached outputs instead of images (the engine's
frozen-prefix shortcut, as for one task); the method draws from whichever it is given.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from graft.methods.alignment import _Cycled
from graft.methods.base import StepOutput, TrainingMethod

WEIGHTINGS = ("fixed", "uncertainty")
SAMPLINGS = ("proportional", "together")


def interleaved(batches: dict[str, int]) -> list[str]:
    """Task names, each as often as it has ``batches``, spread evenly over the epoch (task
    ``t``'s ``k``-th batch at ``(k + 0.5) / n_t`` of the way; ties in task order). No
    randomness: the order is the same every epoch and after a resume."""
    slots = [((k + 0.5) / n, index, task) for index, (task, n) in enumerate(batches.items()) for k in range(n)]
    return [task for _, _, task in sorted(slots)]


class LogVariances(nn.Module):
    def __init__(self, tasks: int):
        super().__init__()
        self.values = nn.Parameter(torch.zeros(tasks))


class MultiTask(TrainingMethod):
    name = "multitask"
    needs_images = False  # the tasks' batches go through one network: a frozen prefix may be cached per task

    def __init__(self, train_loaders: dict, val_loaders: dict, slices: dict[str, slice], weighting: str = "fixed",
                 weights: dict[str, float] | None = None, generators: dict[str, torch.Generator] | None = None,
                 sampling: str = "proportional", frozen_statistics: bool = False):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown task weighting {weighting!r}: {', '.join(WEIGHTINGS)}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"unknown task sampling {sampling!r}: {', '.join(SAMPLINGS)}")
        self.sampling, self.frozen_statistics, self.model = sampling, frozen_statistics, None
        self.train_loaders, self.val_loaders, self.slices = train_loaders, val_loaders, slices
        self.tasks = list(train_loaders)
        self.weighting = weighting
        self.weights = {task: float((weights or {}).get(task, 1.0)) for task in self.tasks}
        self.loss_scale = max(1.0, sum(self.weights.values()))  # a weighted sum of the tasks' losses
        self.generators = generators or {}
        self.log_variances = LogVariances(len(self.tasks)) if weighting == "uncertainty" else None

    def setup(self, model: nn.Module, trunk: nn.Module, head: nn.Module, total_steps: int) -> None:
        self.model = model

    def train(self, mode: bool = True) -> None:
        """The method's own modules' mode; with ``frozen_statistics``, the network's BatchNorm
        layers back to eval mode (the engine has just put the network in training mode)."""
        super().train(mode)
        if mode and self.frozen_statistics and self.model is not None:
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def modules(self) -> dict[str, nn.Module]:
        return {"log_variances": self.log_variances} if self.log_variances is not None else {}

    def _tasks(self, loader) -> dict:
        """The stage's ``{task: loader}`` (images or cached frozen outputs), or the images."""
        return loader if isinstance(loader, dict) else self.train_loaders

    def steps_per_epoch(self, loader) -> int:
        lengths = [len(task_loader) for task_loader in self._tasks(loader).values()]
        return sum(lengths) if self.sampling == "proportional" else max(lengths)

    def batches(self, loader, epoch: int):
        """``{task: (inputs, labels)}`` per step: one task's batch (proportional) or every task's."""
        tasks = self._tasks(loader)
        if self.sampling == "proportional":
            iterators = {task: iter(task_loader) for task, task_loader in tasks.items()}
            for task in interleaved({task: len(task_loader) for task, task_loader in tasks.items()}):
                yield {task: next(iterators[task])}
            return
        iterators = {task: _Cycled(task_loader) for task, task_loader in tasks.items()}
        for _ in range(self.steps_per_epoch(loader)):
            yield {task: next(iterator) for task, iterator in iterators.items()}

    def training_step(self, forward, batch: dict, augmented: bool) -> StepOutput:
        logits = forward(torch.cat([images for images, _ in batch.values()]))
        loss, count, correct, logs, start = 0.0, 0, 0, {}, 0
        for task, (_, labels) in batch.items():
            task_logits = logits[start:start + len(labels), self.slices[task]]
            start += len(labels)
            task_loss = F.cross_entropy(task_logits, labels)
            if self.log_variances is not None:
                s = self.log_variances.values[self.tasks.index(task)]
                loss = loss + torch.exp(-s) * task_loss + s / 2
            else:
                loss = loss + self.weights[task] * task_loss
            hits = int((task_logits.argmax(1) == labels).sum())
            count, correct = count + len(labels), correct + hits
        return StepOutput(loss, count, correct, logs)

    def evaluate(self, evaluated, val_loader) -> tuple[float, float, dict]:
        """The mean over tasks of validation loss and accuracy (the epoch is chosen on it)."""
        evaluated.eval()
        losses, accuracies, logs = [], [], {}
        with torch.inference_mode():
            for task, loader in (val_loader if isinstance(val_loader, dict) else self.val_loaders).items():
                total, hits, seen = 0.0, 0, 0
                for images, labels in loader:
                    task_logits = evaluated(images)[:, self.slices[task]]
                    total += F.cross_entropy(task_logits, labels, reduction="sum").item()
                    hits += int((task_logits.argmax(1) == labels).sum())
                    seen += len(labels)
                losses.append(total / max(1, seen))
                accuracies.append(hits / max(1, seen))
                logs[f"{task}_val_accuracy"] = accuracies[-1]
        if self.log_variances is not None:
            logs["task_log_variances"] = [round(v, 4) for v in self.log_variances.values.tolist()]
        return sum(losses) / len(losses), sum(accuracies) / len(accuracies), logs

    def state_dict(self) -> dict:
        state = super().state_dict()
        for task, generator in self.generators.items():
            state[f"rng.{task}"] = generator.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict({k: v for k, v in state.items() if not k.startswith("rng.")})
        for task, generator in self.generators.items():
            if f"rng.{task}" in state:
                generator.set_state(state[f"rng.{task}"])
