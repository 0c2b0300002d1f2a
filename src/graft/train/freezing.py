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

    Off under DDP and for methods that need the images themselves (``needs_images``); plain
    stages only with ``plain``. The random stream of the run is the same with or without it
    (the encoding runs under a forked RNG), so the losses match the plain path's and resumed
    runs repeat uninterrupted ones. Every epoch's row says what it did: ``frozen_units_reused``
    (plain stages: leading units replaced by cached outputs), ``frozen_units_onnx`` (augmented
    stages: leading units run in ONNX Runtime), ``frozen_engine`` (``onnx``, ``torch``,
    ``cache`` or None) and, on a stage's first epoch, ``frozen_encode_seconds``. The trainer
    adds ``FrozenPrefix(in_onnx=False, plain=False)`` (off: every row says 0) when given none.
    """

    def __init__(self, encode_pooled=None, in_onnx: bool = True, plain: bool = True):
        self.encode_pooled, self.in_onnx, self.plain = encode_pooled, in_onnx, plain
        self._stage_done()

    def _stage_done(self, units_reused: int = 0, units_onnx: int = 0, engine: str | None = None,
                    seconds: float = 0.0) -> None:
        self.units_reused, self.units_onnx, self.engine, self.encode_seconds = units_reused, units_onnx, engine, seconds
        self._first_epoch = True

    def epoch_fields(self, trainer) -> dict:
        first, self._first_epoch = self._first_epoch, False
        return {"frozen_units_reused": self.units_reused, "frozen_units_onnx": self.units_onnx,
                "frozen_engine": self.engine,
                # the stage's one pass of its frozen layers, on the stage's first epoch
                "frozen_encode_seconds": self.encode_seconds if first else 0.0}

    def on_stage_start(self, trainer, run: StageRun) -> None:
        from graft.train import prefix  # looked up per call: the public functions stay patchable

        self._stage_done()
        if trainer.settings.distributed or trainer.method.needs_images:
            return
        if (run.augmented and not self.in_onnx) or (not run.augmented and not self.plain):
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
        seconds = round(time.perf_counter() - started, 3)
        if found is None:
            self._stage_done(seconds=seconds)
        elif run.augmented:
            run.forward, run.evaluated, run.val_loader, units = found
            self._stage_done(units_onnx=units, engine="onnx", seconds=seconds)
        else:
            run.forward, run.train_loader, run.val_loader, units = found
            run.evaluated = run.forward
            loaders = run.train_loader if isinstance(run.train_loader, dict) else {None: run.train_loader}
            self._stage_done(units_reused=units, engine=getattr(next(iter(loaders.values())).dataset, "engine", None),
                             seconds=seconds)
