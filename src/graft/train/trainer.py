"""The fine-tuning loop: stages of epochs of steps over a backbone + head.

The :class:`Trainer` owns the machinery every method shares: per stage, a fresh optimizer
and its schedule over what trains (:mod:`graft.train.optim`), DDP; per epoch, the steps,
validation and the history row. The method (:mod:`graft.methods`) owns its batches, loss,
mixing, extra modules and the fields it adds to the row. Callbacks
(:mod:`graft.train.callbacks`) own what trains in each stage (staged unfreezing), which
epoch is best and when to stop (each on its own ``monitor`` / ``mode``), checkpoints and
exact resume, history.jsonl, the divergence guards and the frozen-prefix shortcuts
(Lightning's split of the same concerns). The trainer reads no callback's fields and no
method's name.

A stage trains on augmented or on plain images (``LoopSettings.augmented``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from graft._io.progress import progress_bar
from graft.errors import GraftError
from graft.methods.base import TrainingMethod
from graft.train.distributed import barrier, world_size
from graft.train.freezing import FrozenPrefix, StagedUnfreezing
from graft.train.hooks import Callback, StageRun
from graft.train.optim import check_choices, optimizer_for_stage
from graft.train.settings import LoopSettings
from graft.train.stages import Stage, set_train_mode

__all__ = ["LoopResult", "LoopSettings", "Network", "TrainData", "Trainer"]


@dataclass
class Network:
    """``model`` computes ``head(trunk(images))``: logits ``[B, classes]`` from ``[B, 3, H, W]``."""
    model: nn.Module
    trunk: nn.Module
    head: nn.Module


@dataclass
class TrainData:
    """The loaders a fit draws from. ``plain_train_loader``: the training images without random
    transforms, for stages marked not augmented (``train_loader`` when None). ``generator``
    shuffles the training loaders; its state is checkpointed."""
    train_loader: object
    val_loader: object
    plain_train_loader: object = None
    generator: torch.Generator | None = None


@dataclass
class LoopResult:
    """``best_epoch`` (1-based) is the epoch the selecting callback (a
    :class:`~graft.train.callbacks.Checkpoint`, by its ``monitor`` / ``mode``) kept as best,
    ``best_accuracy`` that epoch's validation accuracy; -1 for both without one."""
    best_accuracy: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    # 1-based: the epoch whose weights the model holds at the end (best_epoch when a Checkpoint
    # gave them back; else the last epoch run)
    kept_epoch: int = -1


@dataclass
class FitState:
    """Where the fit is; checkpointed by :class:`~graft.train.callbacks.Checkpoint`."""
    epoch: int = 0  # epochs finished, over all stages
    stage_index: int = 0
    epoch_in_stage: int = 0  # epochs finished in stage ``stage_index``
    # set by the callback that selects epochs (Checkpoint, by its monitor and mode): its best
    # epoch so far, that epoch's validation accuracy, and whether the last epoch became it
    best_accuracy: float = -1.0
    best_epoch: int = -1
    improved: bool = False
    should_stop: bool = False  # set by a callback (early stopping)
    resumed_epoch: int | None = None
    history: list[dict] = field(default_factory=list)
    kept_epoch: int | None = None  # set by a callback that gives the model an earlier epoch's weights back


class Trainer:
    """``Trainer(settings, callbacks).fit(method, network, data, resume)``: train through
    ``settings.stages``; see :func:`~graft.train.callbacks.standard_callbacks` for the
    callbacks a graft run uses. Without a
    :class:`~graft.train.freezing.StagedUnfreezing` among ``callbacks``, one is put first
    (as Lightning adds its default callbacks), so each stage trains what its name says; without
    a :class:`~graft.train.freezing.FrozenPrefix`, one that is off is put last, so every row
    has its columns."""

    def __init__(self, settings: LoopSettings, callbacks: list[Callback] | tuple = ()):
        self.settings, self.callbacks = settings, list(callbacks)
        if not any(isinstance(callback, StagedUnfreezing) for callback in self.callbacks):
            self.callbacks.insert(0, StagedUnfreezing())
        if not any(isinstance(callback, FrozenPrefix) for callback in self.callbacks):
            self.callbacks.append(FrozenPrefix(in_onnx=False, plain=False))
        self.state = FitState()
        self.method: TrainingMethod | None = None
        self.network: Network | None = None
        self.data: TrainData | None = None
        self.stage_run: StageRun | None = None
        self.optimizer = self.scheduler = None
        self.trainable: list[str] = []

    def fit(self, method: TrainingMethod, network: Network, data: TrainData,
            resume: dict | None = None) -> LoopResult:
        """Train ``network`` with ``method``. ``resume`` is a ``last.pt`` checkpoint: training
        continues at the epoch after it, with the same freeze mask, optimizer, schedule,
        best-so-far and random states, as if never stopped. Raises :class:`GraftError` for
        an unknown optimizer or schedule, or a checkpoint that does not fit the plan."""
        check_choices(self.settings)
        self.method, self.network, self.data, self.state = method, network, data, FitState()
        stages = self.settings.stages
        total = sum(stage.epochs * max(1, method.steps_per_epoch(self._images_loader(i)))
                    for i, stage in enumerate(stages))
        method.setup(network.model, network.trunk, network.head, total)
        if resume is not None:
            self._restore(resume)
        self._call("on_fit_start")
        first = self.state.stage_index
        for index in range(first, len(stages)):
            if self.state.should_stop:
                break
            self._run_stage(index, resume if index == first else None)
        if self.settings.distributed:
            barrier()  # rank 0 has written best.pt
        self._call("on_fit_end")
        state = self.state
        kept = state.kept_epoch if state.kept_epoch is not None else state.epoch
        return LoopResult(state.best_accuracy, state.best_epoch, state.history, kept)

    def _call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def _images_loader(self, index: int):
        plain = not self.settings.stage_augmented(index) and self.data.plain_train_loader is not None
        return self.data.plain_train_loader if plain else self.data.train_loader

    def _restore(self, resume: dict) -> None:
        self.network.model.load_state_dict(resume["model"])
        if "method" in resume:
            self.method.load_state_dict(resume["method"])
        state = self.state
        state.epoch, state.resumed_epoch = resume["epoch"], resume["epoch"]
        state.stage_index, state.epoch_in_stage = resume["stage_index"], resume["epoch_in_stage"]
        for callback in self.callbacks:
            callback.load_state_dict(resume)

    def _resume_stage(self, resume: dict, stage: Stage) -> int:
        """Put the stage's optimizer, schedule and random states back; the epochs already done."""
        if resume["trainable"] != self.trainable:
            raise GraftError("cannot resume: the checkpoint's freeze mask differs from its stage plan")
        torch.set_rng_state(resume["torch_rng"])
        if self.data.generator is not None:
            self.data.generator.set_state(resume["loader_rng"])
        done = resume["epoch_in_stage"]
        if done >= stage.epochs:  # killed right after a stage's last epoch
            return done
        labels = [(g["peak_lr"], g["name"]) for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(resume["optimizer"])  # replaces the groups' settings...
        for group, (peak, name) in zip(self.optimizer.param_groups, labels):
            group["peak_lr"], group["name"] = peak, name  # ...older checkpoints lack these
        self.scheduler.load_state_dict(resume["scheduler"])
        return done

    def _run_stage(self, index: int, resume: dict | None) -> None:
        settings, method, network = self.settings, self.method, self.network
        stage, images = settings.stages[index], self._images_loader(index)
        self._call("on_stage_setup", stage)  # what trains (StagedUnfreezing)
        self.optimizer, self.scheduler, self.trainable, n_base = optimizer_for_stage(
            settings, stage, network.trunk, network.head, method.steps_per_epoch(images), method.parameters())
        start = self._resume_stage(resume, stage) if resume is not None else 0
        if start >= stage.epochs:
            return
        run = StageRun(index, stage, settings.stage_augmented(index), images, images, self.data.val_loader,
                       network.model, network.model)
        self.stage_run = run
        self._call("on_stage_start", run)
        if settings.distributed:
            # Re-wrapped per stage: DDP syncs only the parameters trainable when it is built.
            from torch.nn.parallel import DistributedDataParallel

            run.forward = DistributedDataParallel(network.model)
        for epoch_in_stage in range(start, stage.epochs):
            row = self._run_epoch(run, n_base)
            state = self.state
            state.stage_index, state.epoch_in_stage = index, epoch_in_stage + 1
            state.history.append(row)
            self._call("on_epoch_end", row)
            if state.should_stop:
                break

    def _run_epoch(self, run: StageRun, n_base: int) -> dict:
        method, optimizer, scheduler = self.method, self.optimizer, self.scheduler
        start = time.perf_counter()
        # DistributedSampler: a new shuffle per epoch (a multi-task stage's loaders are a dict, without one)
        if hasattr(getattr(run.images_loader, "sampler", None), "set_epoch"):
            run.images_loader.sampler.set_epoch(self.state.epoch)
        set_train_mode(self.network.model)
        method.train()
        total, correct, seen, logged, drawn = 0.0, 0, 0, {}, None
        bar = progress_bar(method.steps_per_epoch(run.train_loader), f"{run.stage.name} epoch {self.state.epoch + 1}",
                           "batch", self.settings.progress)
        for batch in method.batches(run.train_loader, self.state.epoch):
            step = method.training_step(run.forward, batch, run.augmented)
            self._call("on_before_backward", step.loss)
            optimizer.zero_grad(set_to_none=True)
            step.loss.backward()
            optimizer.step()
            scheduler.step()
            total += step.loss.item() * step.count
            correct += step.correct
            seen += step.count
            for key, value in step.logs.items():
                logged[key] = logged.get(key, 0.0) + value
            if step.labels is not None:
                drawn = _add_counts(drawn, step.labels)
            bar.update(1)
        bar.close()
        val_loss, val_accuracy, val_logs = method.evaluate(run.evaluated, run.val_loader)
        self.state.epoch += 1
        row = {"epoch": self.state.epoch, "stage": run.stage.name, "augmented": run.augmented,
               "mixed": bool(method.mixes(run.augmented)),
               "lrs": [g["peak_lr"] for g in optimizer.param_groups],
               "lrs_end": [g["lr"] for g in optimizer.param_groups],
               "train_loss": total / max(1, seen), "train_accuracy": correct / max(1, seen),
               "val_loss": val_loss, "val_accuracy": val_accuracy,
               "trainable_backbone_params": n_base, "world_size": world_size()}
        for callback in self.callbacks:  # what the callbacks did this epoch (the frozen prefix's units)
            row.update(callback.epoch_fields(self))
        row["seconds"] = round(time.perf_counter() - start, 3)
        if drawn is not None:  # what the sampler drew this epoch, per class (this process's shard)
            row["train_class_counts"] = drawn.tolist()
        row.update(method.epoch_fields())
        row.update({key: value / max(1, seen) for key, value in logged.items()})
        row.update(val_logs)
        return row

    def checkpoint_state(self, weights: dict) -> dict:
        """The resume checkpoint after the current epoch: ``weights`` (the model's state dict,
        copied), optimizer, schedule, position, the callbacks' state (the best epoch so far is
        the checkpoint callback's), random states and the method's state."""
        state = self.state
        checkpoint = {"model": weights, "optimizer": self.optimizer.state_dict(),
                      "scheduler": self.scheduler.state_dict(), "epoch": state.epoch,
                      "stage_index": state.stage_index, "epoch_in_stage": state.epoch_in_stage,
                      "trainable": self.trainable}
        for callback in self.callbacks:
            checkpoint.update(callback.state_dict())
        generator = self.data.generator
        checkpoint.update({"torch_rng": torch.get_rng_state(),
                           "loader_rng": generator.get_state() if generator is not None
                           else torch.empty(0, dtype=torch.uint8),
                           "method": self.method.state_dict()})
        return checkpoint


def _add_counts(counts, labels: torch.Tensor):
    """``counts`` (an int array per class index, or None) plus the labels of one step."""
    import numpy as np

    step = np.bincount(labels.detach().cpu().numpy().astype(np.int64))
    if counts is None:
        return step
    if len(step) > len(counts):
        counts, step = step, counts
    counts[:len(step)] += step
    return counts
