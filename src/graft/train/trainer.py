"""The fine-tuning loop: a stage plan over a backbone + head, best epoch kept.

Kept deliberately plain: one optimizer per stage (head LR, and a smaller LR for unfrozen
backbone layers, optionally decaying layer by layer down the network), warm-up + cosine or
one-cycle within each stage, optional conservation loss and MixUp/CutMix, early stopping on
validation accuracy, atomic "last" and "best" checkpoints, history.jsonl.

A stage trains on augmented or on plain images (``LoopSettings.augmented``). On plain images
the frozen leading layers see the same inputs every epoch, so their outputs are computed once
per stage and reused (:mod:`graft.train.prefix`).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from graft.errors import GraftError
from graft._io.progress import progress_bar
from graft.methods import Supervised, TrainingMethod
from graft.train.stages import Stage, apply_stage, set_train_mode

OPTIMIZERS = {
    "adamw": lambda groups, wd: torch.optim.AdamW(groups, weight_decay=wd),
    "adam": lambda groups, wd: torch.optim.Adam(groups, weight_decay=wd),
    "sgd": lambda groups, wd: torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=wd),
    "rmsprop": lambda groups, wd: torch.optim.RMSprop(groups, momentum=0.9, weight_decay=wd),
}


@dataclass
class LoopSettings:
    stages: list[Stage]
    lr: float = 1e-3
    base_lr_factor: float = 0.1
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.1
    patience: int | None = None
    freeze_first: int | str | None = None
    schedule: str = "cosine"  # or "onecycle"
    layer_decay: float | None = None  # base LR x decay**k for the k-th trainable unit from the top
    progress: bool = True
    distributed: bool = False  # DDP: gradients averaged across processes; only rank 0 writes
    # per stage: train on the augmented loader (True) or the plain one (False); None = all augmented
    augmented: list[bool] | None = None
    reuse_frozen_prefix: bool = True  # on plain stages; off when a loss needs the images (LwF)
    mixer: object = None  # a graft.methods.mixing.BatchMixer applied to augmented stages' batches
    encode_pooled: object = None  # dataset -> pooled trunk outputs, for wholly frozen trunks
    # augmented stages: run the frozen prefix in ONNX Runtime on every batch (no autograd there)
    frozen_in_onnx: bool = True
    class_weights: torch.Tensor | None = None  # per-class loss weights (--class-weight balanced)
    always_frozen: tuple = ()  # layer units no stage trains (--freeze-transferred)
    keep_last: bool = False  # end with the last epoch's weights, not the best (a final refit has no held-out set)

    def stage_augmented(self, index: int) -> bool:
        return True if self.augmented is None else self.augmented[index]


@dataclass
class LoopResult:
    best_accuracy: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)


def _cosine_with_warmup(total_steps: int, warmup_fraction: float):
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _one_cycle(total_steps: int, rise_fraction: float = 0.25, start_divisor: float = 25.0,
               end_divisor: float = 1e4):
    """One-cycle LR (Smith & Topin, "Super-Convergence", 2018), as fastai shapes it: from
    peak/25 up to the peak over the first quarter (cosine), then cosine down to peak/1e4.
    Momentum is not cycled: graft's optimizers keep their own."""
    rise = max(1, int(total_steps * rise_fraction))

    def factor(step: int) -> float:
        if step < rise:
            low, t = 1 / start_divisor, step / rise
            return low + (1 - low) * 0.5 * (1 - math.cos(math.pi * t))
        t = min(1.0, (step - rise) / max(1, total_steps - rise))
        low = 1 / end_divisor
        return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def is_main_process() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _save_atomic(obj: dict, path: Path) -> None:
    from graft._io.files import atomic_path

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def evaluate_loader(model: nn.Module, loader, with_probabilities: bool = False):
    """(mean loss, accuracy, labels, predictions) of ``model`` in eval mode, plus the softmax
    probabilities (in loader order) with ``with_probabilities``."""
    model.eval()
    losses, labels, probabilities = [], [], []
    with torch.inference_mode():
        for images, targets in loader:
            logits = model(images)
            losses.append(F.cross_entropy(logits, targets, reduction="sum").item())
            labels.append(targets.numpy())
            probabilities.append(torch.softmax(logits, dim=1).numpy())
    y, probs = np.concatenate(labels), np.concatenate(probabilities)
    p = probs.argmax(1)
    result = (sum(losses) / max(1, len(y)), float((y == p).mean()) if len(y) else 0.0, y, p)
    return (*result, probs) if with_probabilities else result


SCHEDULES = ("cosine", "onecycle")


def param_groups(settings: LoopSettings, trunk: nn.Module, head: nn.Module, lr: float,
                 extra: list | tuple = ()) -> list[dict]:
    """Optimizer groups for the current freeze state: the head (and a method's own modules,
    ``extra``) at ``lr``, trainable backbone layers at ``lr * base_lr_factor``, and with
    ``layer_decay`` each trainable unit below the top one another factor ``layer_decay``
    smaller (the lowest layers move least)."""
    groups = [{"params": list(head.parameters()), "lr": lr, "name": "head"}]
    if extra:
        groups.append({"params": list(extra), "lr": lr, "name": "method"})
    base_lr = lr * settings.base_lr_factor
    if settings.layer_decay is None:
        base = [p for p in trunk.parameters() if p.requires_grad]
        if base:
            groups.append({"params": base, "lr": base_lr, "name": "backbone"})
        return groups
    from graft.backbones import layer_units

    trainable_units = [(name, [p for p in module.parameters() if p.requires_grad])
                       for name, module in layer_units(trunk)]
    trainable_units = [(name, params) for name, params in trainable_units if params]
    for depth, (name, params) in enumerate(reversed(trainable_units)):
        groups.append({"params": params, "lr": base_lr * settings.layer_decay ** depth, "name": name})
    # Parameters outside every layer unit (a ViT's cls_token / pos_embed) sit at the bottom.
    grouped = {id(p) for group in groups for p in group["params"]}
    rest = [p for p in trunk.parameters() if p.requires_grad and id(p) not in grouped]
    if rest:
        groups.append({"params": rest, "lr": base_lr * settings.layer_decay ** len(trainable_units),
                       "name": "other"})
    return groups


def freeze_for_stage(settings: LoopSettings, stage: Stage, trunk, head) -> list[str]:
    """Set what trains in ``stage``; return the trainable backbone parameter names."""
    if settings.freeze_first is not None:  # "freeze the first K layers" replaces the plan's freezing
        return apply_stage(trunk, head, freeze_first=settings.freeze_first, always_frozen=settings.always_frozen)
    return apply_stage(trunk, head, stage, always_frozen=settings.always_frozen)


def stage_optimizer(settings: LoopSettings, stage: Stage, trunk, head, steps_per_epoch: int, extra=()):
    """Freeze for ``stage``; a fresh optimizer (head LR, smaller base LR) and its schedule;
    ``extra`` are a training method's own parameters (trained at the head's LR)."""
    if settings.schedule not in SCHEDULES:
        raise GraftError(f"unknown schedule {settings.schedule!r}: {', '.join(SCHEDULES)}")
    trainable = freeze_for_stage(settings, stage, trunk, head)
    groups = param_groups(settings, trunk, head, settings.lr, extra)
    for group in groups:
        group["peak_lr"] = group["lr"]
    optimizer = OPTIMIZERS[settings.optimizer](groups, settings.weight_decay)
    steps = stage.epochs * max(1, steps_per_epoch)
    schedule = _one_cycle(steps) if settings.schedule == "onecycle" else \
        _cosine_with_warmup(steps, settings.warmup_fraction)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    n_base = sum(p.numel() for p in trunk.parameters() if p.requires_grad)
    return optimizer, scheduler, trainable, n_base


def _split_frozen(trunk, head, loader):
    """(prefix, suffix model, sample batch, units) at the end of the frozen prefix, or None
    when nothing is frozen or the network does not run as a sequence of its units."""
    from graft.train.prefix import frozen_prefix_length, split_model

    split = frozen_prefix_length(trunk)
    if split == 0:
        return None
    sample = next(iter(loader))[0][:2]
    parts = split_model(trunk, head, split, sample)
    return None if parts is None else (*parts, sample, split)


def cached_prefix_loaders(trunk, head, train_loader, val_loader, generator, progress: bool = False,
                          encode_pooled=None):
    """(suffix model, train loader, val loader or None, units reused) over cached frozen-prefix
    outputs, or None when nothing is frozen, the net does not split, or the outputs are too big.

    ``encode_pooled(dataset) -> TensorDataset | None``, when given, supplies the pooled outputs
    of a wholly frozen trunk (graft's feature extractor: ONNX Runtime and the on-disk feature
    cache); they are checked against the trunk itself before use.
    """
    from torch.utils.data import DataLoader

    from graft.backbones import layer_units
    from graft.train.prefix import SuffixModel, encode, frozen_prefix_length, onnx_runner

    split = frozen_prefix_length(trunk)
    if split == 0:
        return None
    train_outputs = val_outputs = None
    if encode_pooled is not None and split == len(layer_units(trunk)):
        train_outputs = encode_pooled(train_loader.dataset)
        if train_outputs is not None and _matches_trunk(trunk, train_loader.dataset, train_outputs):
            val_outputs = encode_pooled(val_loader.dataset) if val_loader is not None else None
            suffix_model = SuffixModel(nn.Sequential(), head)
        else:
            train_outputs = None
    if train_outputs is None:
        parts = _split_frozen(trunk, head, val_loader if val_loader is not None else train_loader)
        if parts is None:
            return None
        prefix, suffix_model, sample, split = parts
        runner = onnx_runner(prefix, sample)  # one export serves both passes
        ordered = DataLoader(train_loader.dataset, batch_size=train_loader.batch_size)
        train_outputs = encode(prefix, ordered, progress, "frozen layers (train)", runner)
        if val_loader is not None:
            val_outputs = encode(prefix, val_loader, progress, "frozen layers (val)", runner)
    if train_outputs is None or (val_loader is not None and val_outputs is None):
        return None
    sampler = _resampler_like(train_loader.sampler, generator)
    train_cached = DataLoader(train_outputs, batch_size=train_loader.batch_size, shuffle=sampler is None,
                              sampler=sampler, generator=generator if sampler is None else None,
                              drop_last=train_loader.drop_last)
    val_cached = DataLoader(val_outputs, batch_size=val_loader.batch_size) if val_loader is not None else None
    return suffix_model, train_cached, val_cached, split


def _resampler_like(sampler, generator):
    """A weighted sampler like the images loader's (same weights, same generator), or None."""
    from torch.utils.data import WeightedRandomSampler

    if not isinstance(sampler, WeightedRandomSampler):
        return None
    return WeightedRandomSampler(sampler.weights, sampler.num_samples, sampler.replacement, generator=generator)


def onnx_prefix_stage(trunk, head, train_loader, val_loader, progress: bool = False):
    """For augmented stages: (model whose frozen prefix runs in ONNX Runtime per batch, suffix
    model, validation loader over the prefix's cached outputs, units) or None when nothing is
    frozen, the net does not split, or the prefix does not export and match torch."""
    from torch.utils.data import DataLoader

    from graft.train.prefix import OnnxPrefixThen, encode, onnx_runner

    parts = _split_frozen(trunk, head, val_loader if val_loader is not None else train_loader)
    if parts is None:
        return None
    prefix, suffix_model, sample, split = parts
    runner = onnx_runner(prefix, sample)
    if runner is None:
        return None
    val_cached = None
    if val_loader is not None:
        val_outputs = encode(prefix, val_loader, progress, "frozen layers (val)", runner)
        if val_outputs is None:
            return None
        val_cached = DataLoader(val_outputs, batch_size=val_loader.batch_size)
    return OnnxPrefixThen(runner, suffix_model), suffix_model, val_cached, split


def _matches_trunk(trunk, dataset, outputs, count: int = 2) -> bool:
    """Do the first ``count`` precomputed vectors equal the trunk's own pooled outputs?"""
    images = torch.stack([dataset[i][0] for i in range(min(count, len(dataset)))])
    was_training = trunk.training
    trunk.eval()
    with torch.inference_mode():
        z = trunk(images)
    trunk.train(was_training)
    z = z.mean(dim=(2, 3)) if z.ndim == 4 else z
    got = outputs.tensors[0][:len(images)]
    return got.shape == z.shape and torch.allclose(got, z, atol=1e-3, rtol=1e-3)


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by :func:`run_stages`; tensors and plain values only."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise GraftError(f"cannot resume: {path} does not exist") from exc


def run_stages(model, trunk: nn.Module, head: nn.Module, train_loader, val_loader,
               settings: LoopSettings, checkpoint_dir: Path, history_path: Path,
               regularizer=None, generator: torch.Generator | None = None,
               resume: dict | None = None, plain_train_loader=None,
               method: TrainingMethod | None = None) -> LoopResult:
    """Train ``model`` (= head(trunk(x))) through ``settings.stages``.

    Stages marked not augmented in ``settings.augmented`` train on ``plain_train_loader``
    (the same images without random transforms; ``train_loader`` when not given).

    ``regularizer(images, logits) -> extra loss`` adds conservation training. ``generator`` is
    the training loader's shuffling generator (its state is checkpointed). ``resume`` is a
    ``last.pt`` checkpoint: training continues at the epoch after it, with the same freeze
    mask, optimizer, schedule, best-so-far and random states, as if never stopped. Returns the
    best epoch; the model ends holding the best epoch's weights.

    ``method`` is the training method (:mod:`graft.methods`): the loss, the batches
    drawn, extra modules and what the epoch logs; by default :class:`Supervised` from
    ``settings`` (mixing, class weights) and ``regularizer``.
    """
    if method is None:
        method = Supervised(settings.mixer, settings.class_weights, regularizer,
                            needs_images=not settings.reuse_frozen_prefix)
    reuse_prefix = settings.reuse_frozen_prefix and not method.needs_images
    if settings.optimizer not in OPTIMIZERS:
        raise GraftError(f"unknown optimizer {settings.optimizer!r}: {', '.join(OPTIMIZERS)}")
    main = is_main_process()
    if main:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    result = LoopResult(best_accuracy=-1.0, best_epoch=-1)
    epoch, stale, first_stage, done_in_stage = 0, 0, 0, 0

    def stage_loader(index):
        plain = not settings.stage_augmented(index) and plain_train_loader is not None
        return plain_train_loader if plain else train_loader

    method.setup(model, trunk, head, sum(stage.epochs * max(1, method.steps_per_epoch(stage_loader(i)))
                                         for i, stage in enumerate(settings.stages)))
    if resume is not None:
        model.load_state_dict(resume["model"])
        if "method" in resume:
            method.load_state_dict(resume["method"])
        epoch, stale = resume["epoch"], resume["stale"]
        first_stage, done_in_stage = resume["stage_index"], resume["epoch_in_stage"]
        result.best_accuracy, result.best_epoch = resume["best_accuracy"], resume["best_epoch"]
        result.history = [json.loads(line) for line in history_path.read_text().splitlines()][:epoch] \
            if history_path.exists() else []
        if main:
            history_path.write_text("".join(json.dumps(row) + "\n" for row in result.history))
    stop = settings.patience is not None and stale >= settings.patience
    for stage_index in range(first_stage, len(settings.stages)):
        if stop:
            break
        stage = settings.stages[stage_index]
        augmented = settings.stage_augmented(stage_index)
        images_loader = stage_loader(stage_index)
        optimizer, scheduler, trainable, n_base = stage_optimizer(
            settings, stage, trunk, head, method.steps_per_epoch(images_loader), method.parameters())
        start_in_stage = 0
        if resume is not None and stage_index == first_stage:
            if resume["trainable"] != trainable:
                raise GraftError("cannot resume: the checkpoint's freeze mask differs from its stage plan")
            torch.set_rng_state(resume["torch_rng"])
            if generator is not None:
                generator.set_state(resume["loader_rng"])
            start_in_stage = done_in_stage
            if start_in_stage >= stage.epochs:  # killed right after a stage's last epoch
                continue
            labels = [(g["peak_lr"], g["name"]) for g in optimizer.param_groups]
            optimizer.load_state_dict(resume["optimizer"])  # replaces the groups' settings...
            for group, (peak, name) in zip(optimizer.param_groups, labels):
                group["peak_lr"], group["name"] = peak, name  # ...older checkpoints lack these
            scheduler.load_state_dict(resume["scheduler"])
        forward, stage_train, stage_val, evaluated, reused = model, images_loader, val_loader, model, 0
        encode_start, in_onnx = None, 0
        if not augmented and reuse_prefix and not settings.distributed:
            # Iterating a loader without its own generator draws a seed from torch's global RNG;
            # forking keeps the training run's random stream the same whether or not (and when)
            # the prefix is encoded, so resumed runs repeat uninterrupted ones exactly.
            encode_start = time.perf_counter()
            with torch.random.fork_rng(devices=[]):
                cached = cached_prefix_loaders(trunk, head, images_loader, val_loader, generator,
                                               settings.progress, settings.encode_pooled)
            if cached is not None:
                forward, stage_train, stage_val, reused = cached
                evaluated = forward
        elif augmented and settings.frozen_in_onnx and reuse_prefix and not settings.distributed:
            encode_start = time.perf_counter()
            with torch.random.fork_rng(devices=[]):  # as above: the random stream stays the same
                staged = onnx_prefix_stage(trunk, head, images_loader, val_loader, settings.progress)
            if staged is not None:
                forward, evaluated, stage_val, in_onnx = staged
        encode_seconds = round(time.perf_counter() - encode_start, 3) if encode_start is not None else 0.0
        mixed = bool(getattr(method, "mixes", lambda _: False)(augmented))
        if settings.distributed:
            # Re-wrapped per stage: DDP syncs only the parameters trainable when it is built.
            from torch.nn.parallel import DistributedDataParallel

            forward = DistributedDataParallel(model)
        for epoch_in_stage in range(start_in_stage, stage.epochs):
            start = time.perf_counter()
            if hasattr(images_loader.sampler, "set_epoch"):  # DistributedSampler: a new shuffle per epoch
                images_loader.sampler.set_epoch(epoch)
            set_train_mode(model)
            method.train()
            total, correct, seen, logged = 0.0, 0, 0, {}
            bar = progress_bar(method.steps_per_epoch(stage_train), f"{stage.name} epoch {epoch + 1}", "batch",
                               settings.progress)
            for batch in method.batches(stage_train, epoch):
                step = method.training_step(forward, batch, augmented)
                loss = step.loss
                if not torch.isfinite(loss):
                    raise GraftError(f"loss became {loss.item()} in stage {stage.name}, epoch {epoch + 1}: "
                                     "lower the learning rate (--lr); the best checkpoint so far is kept in "
                                     f"{checkpoint_dir / 'best.pt'}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += loss.item() * step.count
                correct += step.correct
                seen += step.count
                for key, value in step.logs.items():
                    logged[key] = logged.get(key, 0.0) + value
                bar.update(1)
            bar.close()
            val_loss, val_acc, val_logs = method.evaluate(evaluated, stage_val)
            epoch += 1
            row = {"epoch": epoch, "stage": stage.name, "augmented": augmented, "mixed": mixed,
                   "lrs": [g["peak_lr"] for g in optimizer.param_groups],
                   "lrs_end": [g["lr"] for g in optimizer.param_groups],
                   "train_loss": total / max(1, seen), "train_accuracy": correct / max(1, seen),
                   "val_loss": val_loss, "val_accuracy": val_acc,
                   "trainable_backbone_params": n_base, "world_size": _world_size(),
                   "frozen_units_reused": reused,
                   "frozen_units_onnx": in_onnx,  # augmented stages: frozen layers in ONNX Runtime
                   "frozen_engine": getattr(stage_train.dataset, "engine", None) if reused
                   else ("onnx" if in_onnx else None),
                   # the stage's one pass of its frozen layers, on the stage's first epoch
                   "frozen_encode_seconds": encode_seconds if epoch_in_stage == start_in_stage else 0.0,
                   "seconds": round(time.perf_counter() - start, 3)}
            if method.name != "supervised":
                row["method"] = method.name
            row.update({key: value / max(1, seen) for key, value in logged.items()})
            row.update(val_logs)
            result.history.append(row)
            improved = val_acc > result.best_accuracy
            if improved:
                result.best_accuracy, result.best_epoch, stale = val_acc, epoch, 0
            else:
                stale += 1
            if not main:
                if settings.patience is not None and stale >= settings.patience:
                    stop = True
                    break
                continue
            weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if improved:
                _save_atomic({"model": weights, "epoch": epoch, "val_accuracy": val_acc}, checkpoint_dir / "best.pt")
            _save_atomic({
                "model": weights, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "epoch": epoch, "stage_index": stage_index, "epoch_in_stage": epoch_in_stage + 1,
                "trainable": trainable, "best_accuracy": result.best_accuracy,
                "best_epoch": result.best_epoch, "stale": stale, "torch_rng": torch.get_rng_state(),
                "loader_rng": generator.get_state() if generator is not None else torch.empty(0, dtype=torch.uint8),
                "method": method.state_dict(),
            }, checkpoint_dir / "last.pt")
            # history after the checkpoint: a kill between the two loses the line, not the epoch
            with open(history_path, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            if settings.patience is not None and stale >= settings.patience:
                stop = True
                break
    if settings.distributed:
        import torch.distributed as dist

        dist.barrier()  # rank 0 has written best.pt
    if result.best_epoch > 0 and not settings.keep_last:
        model.load_state_dict(load_checkpoint(checkpoint_dir / "best.pt")["model"])
    return result
