"""Multi-task training: one shared network, one head per task (the columns of a
:class:`~graft.heads.modules.MultiTaskHead`), a loss per task.

Every step takes one batch from every task (a task with fewer batches starts over, reshuffled,
when it runs out), so a small task is seen as often as a large one instead of being drowned.
The batches go through the network together, as one. Task losses are summed with fixed
weights, or with learned uncertainty weights (Kendall, Gal & Cipolla, CVPR 2018):
``exp(-s_t) L_t + s_t / 2`` with ``s_t`` the log variance of task ``t``.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from graft.methods.alignment import _Cycled
from graft.methods.base import StepOutput, TrainingMethod

WEIGHTINGS = ("fixed", "uncertainty")


class LogVariances(nn.Module):
    def __init__(self, tasks: int):
        super().__init__()
        self.values = nn.Parameter(torch.zeros(tasks))


class MultiTask(TrainingMethod):
    name = "multitask"
    needs_images = True  # every step mixes tasks' images: no per-loader cached prefix

    def __init__(self, train_loaders: dict, val_loaders: dict, slices: dict[str, slice], weighting: str = "fixed",
                 weights: dict[str, float] | None = None, generators: dict[str, torch.Generator] | None = None):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown task weighting {weighting!r}: {', '.join(WEIGHTINGS)}")
        self.train_loaders, self.val_loaders, self.slices = train_loaders, val_loaders, slices
        self.tasks = list(train_loaders)
        self.weighting = weighting
        self.weights = {task: float((weights or {}).get(task, 1.0)) for task in self.tasks}
        self.generators = generators or {}
        self.log_variances = LogVariances(len(self.tasks)) if weighting == "uncertainty" else None

    def modules(self) -> dict[str, nn.Module]:
        return {"log_variances": self.log_variances} if self.log_variances is not None else {}

    def steps_per_epoch(self, loader) -> int:
        return max(len(task_loader) for task_loader in self.train_loaders.values())

    def batches(self, loader, epoch: int):
        iterators = {task: _Cycled(task_loader) for task, task_loader in self.train_loaders.items()}
        for _ in range(self.steps_per_epoch(loader)):
            yield {task: next(iterator) for task, iterator in iterators.items()}

    def training_step(self, forward, batch: dict, augmented: bool) -> StepOutput:
        logits = forward(torch.cat([images for images, _ in batch.values()]))
        loss, count, correct, logs, start = 0.0, 0, 0, {}, 0
        for index, (task, (_, labels)) in enumerate(batch.items()):
            task_logits = logits[start:start + len(labels), self.slices[task]]
            start += len(labels)
            task_loss = F.cross_entropy(task_logits, labels)
            if self.log_variances is not None:
                s = self.log_variances.values[index]
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
            for task, loader in self.val_loaders.items():
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
