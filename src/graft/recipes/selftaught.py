"""``graft pretrain --unlabelled DIR``: self-taught learning (Raina et al., ICML 2007). A pretrained
network is continued self-supervised (``objective``: rotation prediction or SimSiam,
:mod:`graft.methods.selfsupervised`) on the user's unlabelled images, any layout, labels
ignored, on graft's :class:`~graft.train.trainer.Trainer` (stages, checkpoints, exact resume,
history.jsonl, progress bar). The run folder's model is the adapted trunk with the pretext
task's head (a 4-way rotation classifier, or SimSiam's projector, which predictors refuse), so
the run is a backbone for ``fit``, ``finetune``, ``cluster`` and ``advise`` (``--backbone
RUN``), as a labelled ``graft pretrain`` run is.

Continuing from ImageNet weights instead of starting from scratch is what makes it fit a CPU
(Reed et al., "Self-Supervised Pretraining Improves Self-Supervised Pretraining", WACV 2022).
"""
from __future__ import annotations

import contextlib
import json
import resource
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from graft._io.artifact import write_artifact
from graft._io.files import write_atomic
from graft._io.progress import progress_bar
from graft.artifacts.config import artifact_config
from graft.artifacts.model import GraftModel
from graft.artifacts.run_folder import RunDir, open_run
from graft.backbones import create_backbone
from graft.data.datasets import readable_images
from graft.data.folders import ImageFolder, load_image
from graft.data.manifest import folder_manifest
from graft.errors import DataError, GraftError
from graft.heads.modules import LinearHead
from graft.methods.selfsupervised import (
    ROTATIONS,
    ProjectionHead,
    RotationPrediction,
    SimSiam,
    TwoViews,
    adapt_batchnorm,
)
from graft.recipes._run import (
    FitResult,
    check_data_unchanged,
    check_not_an_input,
    check_resumable,
    check_resume_arguments,
    write_manifest,
)
from graft.recipes.settings import PretrainConfig
from graft.recipes.settings.selftaught import unlabelled_folder
from graft.recipes.settings.versions import settings_record
from graft.reporting.plots import training_curves_png
from graft.train.callbacks import FrozenPrefix, load_checkpoint, standard_callbacks
from graft.train.stages import check_plan, parse_stages
from graft.train.trainer import LoopSettings, Network, TrainData, Trainer

PROJECTION_DIM = 256
ROTATION_CROP = 0.6  # the smallest crop (area fraction) rotation prediction trains on


class Views(Dataset):
    """One randomly augmented view ``[3, H, W]`` of each image (and its -1 label): a random-resized
    crop (scale ``smallest``-1; never mirrored: a mirrored digit or letter is another), colour jitter
    (p 0.8) and grayscale (p 0.2), SimCLR's recipe (Chen et al. 2020) without the blur, which
    erases images of a few dozen pixels. Random draws use torch's global RNG (checkpointed)."""

    def __init__(self, folder: ImageFolder, preprocessing, smallest: float = 0.3):
        from torchvision.transforms import v2

        self.records, self.preprocessing = folder.records, preprocessing
        self.random = v2.Compose([v2.RandomResizedCrop(preprocessing.size, scale=(smallest, 1.0), antialias=True),
                                  v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                                  v2.RandomGrayscale(p=0.2)])

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index):
        image = load_image(self.records[index].path, min_side=self.preprocessing.resize_size)
        return torch.from_numpy(self.preprocessing.normalize(self.random(image))), -1


class Plain(Views):
    """The images as the backbone will later see them (resize and centre crop), for AdaBN."""

    def __getitem__(self, index):
        image = load_image(self.records[index].path, min_side=self.preprocessing.resize_size)
        return torch.from_numpy(self.preprocessing.to_array(image)), -1


@dataclass
class Plan:
    """A self-taught run, built before the run folder is opened."""
    config: PretrainConfig
    folder: ImageFolder  # the unlabelled folder as scanned (data.json)
    train: ImageFolder
    val: ImageFolder
    skipped: list
    source: object  # the Backbone training starts from
    model: GraftModel
    method: object  # SimSiam or RotationPrediction
    loop: LoopSettings
    data: TrainData
    plain: DataLoader


def scan(config: PretrainConfig) -> ImageFolder:
    """The unlabelled folder, any layout (:func:`~graft.recipes.settings.selftaught.unlabelled_folder`)."""
    return unlabelled_folder(config.unlabelled_dir)


def split(folder: ImageFolder, fraction: float, seed: int) -> tuple[ImageFolder, ImageFolder]:
    """A seeded random split: ``fraction`` of the images (at least one) hold out for the
    validation loss; the rest train."""
    order = np.random.default_rng(seed).permutation(len(folder))
    n_val = min(len(folder) - 2, max(1, round(fraction * len(folder))))
    return folder.subset(sorted(order[n_val:])), folder.subset(sorted(order[:n_val]))


def build(config: PretrainConfig, folder: ImageFolder, *, strict: bool, progress: bool) -> Plan:
    """Seeded first, so a resume builds the same plan: the split, the readable images (a file
    that does not decode is skipped with a warning, or an error with ``strict``; when no held-out
    file decodes, the last readable training image is held out instead), the source
    network with the objective's head (rotation classifier or SimSiam projector), the loaders,
    the method and the loop."""
    torch.manual_seed(config.seed)
    stages = parse_stages(config.stages)
    source = create_backbone(config.backbone, weights=config.weights, pretrained=True)
    preprocessing = source.preprocessing.with_size(config.image_size)
    features = source.feature_net(None)
    check_plan(stages, features.trunk)
    train, val = split(folder, config.val_fraction, config.seed)
    train, skipped = readable_images(train, strict, progress)
    val, skipped_val = readable_images(val, strict, progress)
    if not len(val) and len(train) >= 3:  # no held-out file decoded: hold out the last readable training image
        train, val = train.subset(range(len(train) - 1)), train.subset([len(train) - 1])
    if len(train) < 2 or not len(val):
        raise DataError(f"--unlabelled {folder.root}: too few readable images to train and validate on")
    width = features.output_dim(preprocessing.size)
    rotation = config.objective == "rotation"
    head = LinearHead(width, len(ROTATIONS)) if rotation else ProjectionHead(width, dim=PROJECTION_DIM)
    model = GraftModel.from_backbone(source, head, list(ROTATIONS) if rotation else [], preprocessing=preprocessing,
                                     features=features, training=config.training_record())
    generator = torch.Generator().manual_seed(config.seed)
    batch = min(config.batch_size, len(train))
    # rotation: one view, crops that keep most of the image (a digit cut in half has no upright)
    views = Views(train, preprocessing, ROTATION_CROP) if rotation else TwoViews(Views(train, preprocessing))
    loader = DataLoader(views, batch_size=batch, shuffle=True, generator=generator,
                        drop_last=len(train) > batch)  # BatchNorm needs two or more images per batch
    val_loader = DataLoader(Plain(val, preprocessing) if rotation else TwoViews(Views(val, preprocessing)),
                            batch_size=config.batch_size)
    loop = LoopSettings(stages=stages, lr=config.lr, base_lr_factor=config.base_lr_factor,
                        optimizer=config.optimizer, weight_decay=config.weight_decay, schedule=config.schedule,
                        progress=progress, augmented=[True] * len(stages))
    method = RotationPrediction() if rotation else SimSiam(PROJECTION_DIM, seed=config.seed)
    return Plan(config, folder, train, val, skipped + skipped_val, source, model, method, loop,
                TrainData(loader, val_loader, loader, generator), DataLoader(Plain(train, preprocessing),
                                                                             batch_size=config.batch_size))


def pretrain_unlabelled(config: PretrainConfig, out, *, strict: bool = False, progress: bool = True,
                        overwrite: bool = False) -> FitResult:
    """Continue ``config.backbone`` self-supervised on ``config.unlabelled_dir`` into run folder
    ``out`` (model/, history.jsonl, checkpoints/, curves.png, metrics.json, config.yaml,
    data.json); every check passes before the folder is touched. Resumable (``graft resume``)."""
    start = time.perf_counter()
    folder = scan(config)
    check_not_an_input(out, config)
    plan = build(config, folder, strict=strict, progress=progress)
    run = open_run(out, config.COMMAND, overwrite=overwrite)
    with run.lock(config.COMMAND):
        run.write_config(settings_record(config.COMMAND, config.to_dict()))
        write_manifest(run, {"unlabelled": folder_manifest(folder)})
        return execute(run, plan, resume=None, progress=progress, start=start)


def continue_unlabelled(run: RunDir, saved: dict, *, given: dict, strict: bool = False,
                        progress: bool = True) -> FitResult:
    """Continue a killed self-taught run from ``RUN/checkpoints/last.pt`` with its saved settings;
    refused when the images changed since it started (RUN/data.json)."""
    start = time.perf_counter()
    settings = saved["settings"]
    check_resume_arguments(run.path, settings, given, PretrainConfig)
    check_resumable(run)
    try:
        config = PretrainConfig.from_dict(settings)
    except GraftError as exc:
        raise GraftError(f"{run.path / 'config.yaml'}: {exc}") from None
    try:
        folder = scan(config)
    except DataError:
        check_data_unchanged(run.path, {"unlabelled": config.unlabelled_dir})
        raise
    check_data_unchanged(run.path, {"unlabelled": config.unlabelled_dir}, {"unlabelled": folder_manifest(folder)})
    state = load_checkpoint(run.path / "checkpoints" / "last.pt")
    plan = build(config, folder, strict=strict, progress=progress)
    with run.lock(saved["command"]):
        return execute(run, plan, resume=state, progress=progress, start=start)


def _adapt(plan: Plan, progress: bool) -> None:
    """AdaBN on the plain training images for the BatchNorm layers the last stage trained (their
    running statistics followed augmented views; ``fit`` extracts from plain images). Frozen
    layers keep ImageNet's: AdaBN of every layer cost 11 points on MNIST-M (BENCHMARKS.md)."""
    features = plan.model.features
    features.eval()
    bar = progress_bar(len(plan.plain), "BatchNorm statistics", "batch", progress)
    with torch.random.fork_rng(devices=[]):  # the training run's random stream stays as it was
        adapt_batchnorm(features, plan.plain, bar.update, trainable_only=True)
    bar.close()


def execute(run: RunDir, plan: Plan, *, resume: dict | None, progress: bool, start: float) -> FitResult:
    """Train (from ``resume``, a last.pt), re-estimate the BatchNorm statistics on the plain
    images, then write the model, curves and metrics.json (last: a run with it is finished)."""
    config, model = plan.config, plan.model
    callbacks = standard_callbacks(run.path / "checkpoints", run.path / "history.jsonl", patience=config.patience,
                                   keep_last=True, frozen_prefix=FrozenPrefix(in_onnx=False, plain=False),
                                   monitor="val_loss", mode="min")
    network = Network(model, model.features.trunk, model.head)
    result = Trainer(plan.loop, callbacks).fit(plan.method, network, plan.data, resume=resume)
    _adapt(plan, progress)
    model.eval()
    training = {**config.training_record(), "objective": config.objective, "epochs_run": len(result.history)}
    if config.objective == "rotation":  # a 4-way rotation classifier: a model in graft's own format
        model.training_info.update(training)
        model.save(run.model_dir)
    else:
        _save(run, model, training)
    last = result.history[-1]
    metrics = {"command": "pretrain", "objective": config.objective, "unlabelled_dir": str(plan.folder.root),
               "n_train": len(plan.train), "n_val": len(plan.val), "epochs_run": len(result.history),
               "final_train_loss": last["train_loss"], "final_val_loss": last["val_loss"],
               "first_val_loss": result.history[0]["val_loss"], "val_output_spread": last.get("val_output_spread"),
               "final_val_accuracy": last["val_accuracy"],
               "resumed_from_epoch": resume["epoch"] if resume else None, "skipped": plan.skipped,
               "image_size": model.preprocessing.size, "seconds": round(time.perf_counter() - start, 3),
               # ru_maxrss is in KiB on Linux: the whole process's peak, the weights and loaders included
               "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    metrics["summary"] = (  # what the command prints
        f"self-taught {config.backbone} on {len(plan.train)} unlabelled images ({plan.folder.root}): "
        f"{config.objective} validation loss {metrics['first_val_loss']:.3f} -> {metrics['final_val_loss']:.3f} over "
        f"{len(result.history)} epoch(s), {metrics['seconds']:.0f} s, peak RSS {metrics['peak_rss_mib']:.0f} MiB\n"
        f"history: {run.path / 'history.jsonl'}  curves: {run.path / 'curves.png'}\n"
        f"a backbone now: graft fit DATA --backbone {run.path}")
    training_curves_png(result.history, run.path / "curves.png")
    run.write_config(settings_record(config.COMMAND, config.to_dict(), image_size=model.preprocessing.size,
                                     backbone_weights=plan.source.weights_source))
    write_atomic(run.path / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return FitResult(run.path, metrics)


def _save(run: RunDir, model: GraftModel, training: dict) -> None:
    """RUN/model: the trunk a backbone reads (``backbone.*``) and the projector (``head.*``), whose
    outputs are named as classes ``z0``.. so the folder keeps graft's model format; graft's
    predictors refuse its head kind (no classes to predict)."""
    def arrays(module):
        return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}

    head = {"kind": "simsiam-projector", "in_features": model.head.net[0].in_features,
            "num_classes": PROJECTION_DIM}
    config = artifact_config(model.backbone_info, None, model.preprocessing.to_dict(),
                             [f"z{i}" for i in range(PROJECTION_DIM)], head, training)
    with contextlib.suppress(FileNotFoundError):
        (run.model_dir / "novelty.npz").unlink()  # no classes: no novelty statistics
    write_artifact(run.model_dir, config, arrays(model.features.trunk), arrays(model.head))
