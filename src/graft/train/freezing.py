"""What a stage runs: which layers train (:class:`StagedUnfreezing`, the stage plan applied
stage by stage) and the frozen leading layers run once instead of every epoch
(:class:`FrozenPrefix`)."""
from __future__ import annotations

import time

import torch

from graft.train.hooks import Callback, StageRun
from graft.train.stages import Stage, apply_stage


class StagedUnfreezing(Callback):
    """Staged unfreezing (Howard & Ruder, ULMFiT, 2018; Lightning's ``BaseFinetuning`` does the
    same from a callback): before each stage's optimizer is built, the head and the stage's
    layers train and the rest of the backbone is frozen (:func:`~graft.train.stages.apply_stage`:
    ``head``, ``topN``, ``all``). ``freeze_first`` (K or a unit's name) replaces the plan's
    freezing and ``always_frozen`` units never train; None takes them from the trainer's
    :class:`~graft.train.settings.LoopSettings`. The trainer adds one (reading its settings)
    when its callbacks hold none, so a plan means what it says without being asked.
    """

    def __init__(self, freeze_first: int | str | None = None, always_frozen: tuple | None = None):
        self.freeze_first, self.always_frozen = freeze_first, always_frozen

    def on_stage_setup(self, trainer, stage: Stage) -> None:
        settings, network = trainer.settings, trainer.network
        freeze_first = self.freeze_first if self.freeze_first is not None else settings.freeze_first
        always_frozen = self.always_frozen if self.always_frozen is not None else settings.always_frozen
        if freeze_first is not None:  # "freeze the first K layers" replaces the plan's freezing
            apply_stage(network.trunk, network.head, freeze_first=freeze_first, always_frozen=always_frozen)
        else:
            apply_stage(network.trunk, network.head, stage, always_frozen=always_frozen)


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
