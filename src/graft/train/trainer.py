"""The fine-tuning loop: stages of epochs of steps over a backbone + head.

The :class:`Trainer` owns the machinery every method shares: per stage, what trains (the
stage plan), a fresh optimizer and its schedule (:mod:`graft.train.optim`), DDP; per epoch,
the steps, validation and the history row. The method (:mod:`graft.methods`) owns its
batches, loss, mixing and extra modules. Callbacks (:mod:`graft.train.callbacks`) own
checkpoints and exact resume, early stopping, history.jsonl, the non-finite loss guard and
the frozen-prefix shortcuts (Lightning's split of the same concerns).

A stage trains on augmented or on plain images (``LoopSettings.augmented``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from graft._io.progress import progress_bar
from graft.defaults import BASE_LR_FACTOR, LR, OPTIMIZER, SCHEDULE, WEIGHT_DECAY  # graft finetune's too
from graft.errors import GraftError
from graft.methods.base import TrainingMethod
from graft.train.callbacks import Callback, StageRun
from graft.train.distributed import barrier, world_size
from graft.train.optim import check_choices, stage_optimizer
from graft.train.stages import Stage, set_train_mode

__all__ = ["LoopResult", "LoopSettings", "Network", "TrainData", "Trainer"]


@dataclass
class LoopSettings:
    """How the loop trains; what a method or a callback decides lives there instead.

    ``lr`` is the head's peak learning rate; unfrozen backbone layers get ``lr *
    base_lr_factor``, with ``layer_decay`` another factor less per unit down from the top.
    ``schedule``: ``cosine`` (warm-up over ``warmup_fraction`` of each stage's steps, then
    cosine) or ``onecycle``. ``augmented``: per stage, train on the augmented loader (True)
    or the plain one (False); None = all augmented. ``freeze_first`` (K or a unit's name)
    replaces the plan's freezing; units in ``always_frozen`` never train.
    """
    stages: list[Stage]
    lr: float = LR
    base_lr_factor: float = BASE_LR_FACTOR
    optimizer: str = OPTIMIZER
    weight_decay: float = WEIGHT_DECAY
    warmup_fraction: float = 0.1
    freeze_first: int | str | None = None
    schedule: str = SCHEDULE  # or "onecycle"
    layer_decay: float | None = None  # base LR x decay**k for the k-th trainable unit from the top
    progress: bool = True
    distributed: bool = False  # DDP: gradients averaged across processes; only rank 0 writes
    augmented: list[bool] | None = None
    always_frozen: tuple = ()  # layer units no stage trains (--freeze-transferred)

    def stage_augmented(self, index: int) -> bool:
        return True if self.augmented is None else self.augmented[index]


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
    best_accuracy: float
    best_epoch: int  # 1-based, the highest validation accuracy
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
    best_accuracy: float = -1.0
    best_epoch: int = -1
    improved: bool = False  # the last epoch beat every earlier one
    should_stop: bool = False  # set by a callback (early stopping)
    resumed_epoch: int | None = None
    history: list[dict] = field(default_factory=list)
    kept_epoch: int | None = None  # set by a callback that gives the model an earlier epoch's weights back


class Trainer:
    """``Trainer(settings, callbacks).fit(method, network, data, resume)``: train through
    ``settings.stages``; see :func:`~graft.train.callbacks.standard_callbacks` for the
    callbacks a graft run uses."""

    def __init__(self, settings: LoopSettings, callbacks: list[Callback] | tuple = ()):
        self.settings, self.callbacks = settings, list(callbacks)
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
        state.best_accuracy, state.best_epoch = resume["best_accuracy"], resume["best_epoch"]
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
        self.optimizer, self.scheduler, self.trainable, n_base = stage_optimizer(
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
            row = self._run_epoch(run, n_base, first=epoch_in_stage == start)
            state = self.state
            state.stage_index, state.epoch_in_stage = index, epoch_in_stage + 1
            state.improved = row["val_accuracy"] > state.best_accuracy
            if state.improved:
                state.best_accuracy, state.best_epoch = row["val_accuracy"], state.epoch
            state.history.append(row)
            self._call("on_epoch_end", row)
            if state.should_stop:
                break

    def _run_epoch(self, run: StageRun, n_base: int, first: bool) -> dict:
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
               "trainable_backbone_params": n_base, "world_size": world_size(),
               "frozen_units_reused": run.frozen_units_reused,
               "frozen_units_onnx": run.frozen_units_onnx,  # augmented stages: frozen layers in ONNX Runtime
               "frozen_engine": run.frozen_engine,
               # the stage's one pass of its frozen layers, on the stage's first epoch
               "frozen_encode_seconds": run.encode_seconds if first else 0.0,
               "seconds": round(time.perf_counter() - start, 3)}
        if drawn is not None:  # what the sampler drew this epoch, per class (this process's shard)
            row["train_class_counts"] = drawn.tolist()
        if method.name != "supervised":
            row["method"] = method.name
        row.update({key: value / max(1, seen) for key, value in logged.items()})
        row.update(val_logs)
        return row

    def checkpoint_state(self, weights: dict) -> dict:
        """The resume checkpoint after the current epoch: ``weights`` (the model's state dict,
        copied), optimizer, schedule, position, best so far, the callbacks' state, random
        states and the method's state."""
        state = self.state
        checkpoint = {"model": weights, "optimizer": self.optimizer.state_dict(),
                      "scheduler": self.scheduler.state_dict(), "epoch": state.epoch,
                      "stage_index": state.stage_index, "epoch_in_stage": state.epoch_in_stage,
                      "trainable": self.trainable, "best_accuracy": state.best_accuracy,
                      "best_epoch": state.best_epoch}
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
