"""The run plan of a network-training recipe (finetune, pretrain, adapt, distill, lr-find),
built once from its Config before the run folder is opened: every data folder scanned, split
and checked once (:func:`load_run_data`), the source network built once and the stage plan
checked on it, the images decode-checked, the loaders, loop settings and the method chosen
(:func:`build_plan`). :mod:`graft.recipes._training` then opens the run and executes it.

A recipe brings a :class:`NetworkRecipe`: its own folders and method (Lightning's
LightningModule / DataModule split, for graft's shared path)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from graft._io.memory import check_training_memory
from graft.artifacts.model import GraftModel
from graft.backbones import create_backbone
from graft.data.datasets import ImageDataset, readable_images
from graft.data.decisions import apply_exclude
from graft.data.folders import ImageFolder, load_train_val
from graft.data.heldout import load_test
from graft.data.manifest import folder_manifest
from graft.defaults import LR
from graft.heads.modules import LinearHead, MLPHead
from graft.methods import Supervised
from graft.methods.regularization import conservation_term
from graft.methods.supervised import balanced_class_weights
from graft.recipes.settings import FinetuneConfig
from graft.train.callbacks import FrozenPrefix
from graft.train.loaders import training_loader
from graft.train.prefix import pooled_encoder
from graft.train.stages import Stage, check_plan, parse_stages
from graft.train.trainer import LoopSettings


@dataclass(frozen=True)
class RunData:
    """A run's data, each folder scanned once, before anything is written. ``train``/``val``:
    the split with ``--exclude`` applied (not yet decode-checked); ``test``: the test folder
    scanned against the training classes and checked (:func:`graft.data.heldout.load_test`);
    ``scanned``: {data.json part: the folder as scanned, or None}, what a resume compares;
    ``own``: the recipe's own folders (:attr:`NetworkRecipe.folders`); ``said``: the warnings
    about them, held until every check before training has passed (a refusal is one line)."""

    train: ImageFolder
    val: ImageFolder
    test: ImageFolder | None
    scanned: dict
    own: Any = None
    said: tuple = ()

    def say(self) -> None:
        """Give the held warnings, once."""
        for warning in self.said:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)

    def manifests(self) -> dict:
        """RUN/data.json: every scanned folder's file list (a split of training: ``val`` None)."""
        return {part: folder_manifest(folder) if folder is not None else None for part, folder in self.scanned.items()}


@dataclass(frozen=True)
class NetworkRecipe:
    """What a network-training recipe adds to the shared plan; each step runs once per plan.

    ``folders(config, data) -> (own, {data.json part: folder as scanned})``: the recipe's own
    folders, scanned and checked against the training data (adapt's target, distill's
    transfer set). ``configure(config, data) -> config``: settings chosen from the data, on a
    new run (adapt's backbone and size). ``readable(config, data, strict, progress) -> (own,
    skipped)``: those folders without the images that do not decode. ``dataset(plan,
    dataset)``: what one training item is (distillation adds its index). ``method(plan,
    strict, progress)``: the TrainingMethod (:func:`supervised_method` when None).
    ``before(run, plan)``: before the first epoch of a new run; ``results(run, plan, model)
    -> dict``: extra metrics after training. ``keep_last``: keep the last epoch instead of the
    best on validation (adaptation chooses no epoch on the source)."""

    folders: Callable | None = None
    configure: Callable | None = None
    readable: Callable | None = None
    dataset: Callable | None = None
    method: Callable | None = None
    before: Callable | None = None
    results: Callable | None = None
    keep_last: bool = False


SUPERVISED = NetworkRecipe()  # finetune, pretrain, lr-find: cross-entropy, the best epoch on validation


@dataclass(frozen=True)
class TrainingPlan:
    """Everything a run trains with, built once (:func:`build_plan`). ``train``/``val``: the
    readable images; ``own``: the recipe's readable folders; ``skipped``: every image left
    out as unreadable, ``{"path", "reason"}``."""

    config: FinetuneConfig
    recipe: NetworkRecipe
    data: RunData
    stages: tuple[Stage, ...]
    source: Any  # the Backbone training starts from
    preprocessing: Any
    features: torch.nn.Module  # the feature network (trunk + pooling)
    head: torch.nn.Module
    model: GraftModel
    train: ImageFolder
    val: ImageFolder
    own: Any
    skipped: tuple[dict, ...]
    generator: torch.Generator
    train_loader: DataLoader
    plain_loader: DataLoader
    val_loader: DataLoader
    loop: LoopSettings
    frozen_prefix: FrozenPrefix
    mixer: Any = None
    method: Any = field(default=None)

    @property
    def plan(self) -> list[Stage]:
        return list(self.stages)


def whole_folder(train: ImageFolder, val: ImageFolder | None, split: bool) -> ImageFolder:
    """The training folder as scanned: a split's two parts together again, in scanning order."""
    if not split or val is None:
        return train
    records = sorted(train.records + val.records, key=lambda record: (record.label, record.path))
    return ImageFolder(train.root, train.classes, records)


def load_run_data(c: FinetuneConfig, recipe: NetworkRecipe) -> RunData:
    """Scan, split and check every data folder of ``c`` once: training and validation
    (``--exclude`` applied), the test folder, the recipe's own; their warnings are held
    (:meth:`RunData.say`). Raises DataError / GraftError naming the folder and the problem."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        data = _scanned(c, recipe)
    return replace(data, said=tuple(said))


def _scanned(c: FinetuneConfig, recipe: NetworkRecipe) -> RunData:
    train, val = load_train_val(c.train_dir, val_dir=c.val_dir, val_fraction=c.val_fraction, seed=c.seed,
                                balanced="balanced" in (c.class_weight, c.sampler))
    scanned = {"train": whole_folder(train, val, c.val_dir is None), "val": val if c.val_dir else None}
    if c.exclude is not None:  # graft audit's decisions, acted on in memory: no file changes
        train, val = apply_exclude(c.exclude, train, val)
    test = load_test(c.test_dir, train, val, final=c.final) if getattr(c, "test_dir", None) else None
    data = RunData(train, val, test, scanned)
    if recipe.folders is None:
        return data
    own, more = recipe.folders(c, data)
    return replace(data, own=own, scanned={**scanned, **more})


def supervised_method(plan: TrainingPlan, strict: bool = False, progress: bool = True) -> Supervised:
    """Cross-entropy with the Config's mixing, class weights and conservation term."""
    c = plan.config
    weights = balanced_class_weights(plan.train.labels, len(plan.train.classes)) \
        if c.class_weight == "balanced" else None
    regularizer = conservation_term(c.regularizer, c.regularizer_weight, plan.source.model, plan.features, plan.head)
    return Supervised(plan.mixer, weights, regularizer, needs_images=c.regularizer == "lwf")  # LwF needs images


def make_head(spec: str, in_features: int, num_classes: int):
    """``linear`` or ``mlp:HIDDEN`` (FC-ReLU-Dropout(0.5)-FC) on ``in_features`` features."""
    if spec == "linear":
        return LinearHead(in_features, num_classes)
    _, _, hidden = spec.partition(":")
    return MLPHead(in_features, num_classes, hidden=int(hidden or 256), dropout=0.5)


def source_network(c: FinetuneConfig):
    """The backbone training starts from: pretrained weights, random ones (``pretrained`` off,
    as ``graft pretrain``), or a fresh network holding some layers copied from a donor
    (``transfer_layers``, from ``transfer_from`` or the backbone itself)."""
    if not c.transfer_layers:
        return create_backbone(c.backbone, weights=c.weights, pretrained=c.pretrained)
    from graft.backbones.transfer import transferred_network

    return transferred_network(c.backbone, c.transfer_layers, donor=c.transfer_from, weights=c.weights)


def check_mixing(c: FinetuneConfig) -> None:
    """Mixing without augmented stages does nothing: said before training."""
    plan = parse_stages(c.stages)
    augmented = c.augment != "none" and (c.augment_head_stage or c.freeze_first is not None
                                         or any(stage.top_blocks != 0 for stage in plan))
    if (c.mixup or c.cutmix) and not augmented:
        warnings.warn("--mixup/--cutmix apply to augmented stages only, and this plan has none "
                      "(augmentation is off, or only head stages without --augment-head-stage)")


def build_plan(c: FinetuneConfig, recipe: NetworkRecipe, data: RunData, *, strict: bool, progress: bool,
               distributed: bool, final_pass: bool = False, readable: tuple | None = None) -> TrainingPlan:
    """The plan of a run of ``c`` on ``data`` (seeded first, so it repeats): the source network
    built once and the stage plan checked on it, the readable images (``readable``: the
    (train, val, own, skipped) of an earlier plan, reused), head, model, loaders, loop
    settings and the recipe's method. ``final_pass``: train on validation images too."""
    torch.manual_seed(c.seed)
    np.random.seed(c.seed)
    stages = parse_stages(c.stages)
    source = source_network(c)
    preprocessing = source.preprocessing.with_size(c.image_size) if c.image_size else source.preprocessing
    features = source.feature_net(None)
    check_plan(stages, features.trunk, getattr(c, "freeze_first", None))
    check_training_memory(features, preprocessing.size, c.batch_size,
                          whole_base=any(stage.top_blocks is None or stage.top_blocks < 0 for stage in stages))
    if readable is None:
        data.say()  # every check on the Config and the network passed: the data's warnings, then its images'
    train, val, own, skipped = readable or _readable(c, recipe, data, strict, progress)
    if final_pass:  # the final refit trains on every labelled image
        train = ImageFolder(train.root, train.classes, train.records + val.records)
    head = make_head(c.head, features.output_dim(preprocessing.size), len(train.classes))
    model = GraftModel.from_backbone(source, head, train.classes, preprocessing=preprocessing,
                                     training=c.training_record(), features=features)
    generator = torch.Generator().manual_seed(c.seed)
    # Which stages see augmented images: none without augmentation; head-only stages only when asked.
    augmented = [c.augment != "none" and (stage.top_blocks != 0 or c.augment_head_stage or c.freeze_first is not None)
                 for stage in stages]
    plan = TrainingPlan(c, recipe, data, tuple(stages), source, preprocessing, features, head, model, train, val, own,
                        tuple(skipped), generator, None, None,
                        DataLoader(ImageDataset(val, preprocessing, "none"), batch_size=c.batch_size),
                        _loop(c, stages, features, augmented, progress, distributed),
                        FrozenPrefix(encode_pooled=pooled_encoder(features, preprocessing, source.architecture,
                                                                  c.batch_size, progress)))

    def loader(augment):
        dataset = ImageDataset(train, preprocessing, augment)
        dataset = recipe.dataset(plan, dataset) if recipe.dataset else dataset
        return training_loader(dataset, train.labels, c.batch_size, c.sampler, generator, distributed, c.seed)

    plain = loader("none")
    mixer = None
    if c.mixup or c.cutmix:
        from graft.methods.mixing import BatchMixer

        mixer = BatchMixer(len(train.classes), mixup_alpha=c.mixup, cutmix_alpha=c.cutmix)
    plan = replace(plan, plain_loader=plain, train_loader=loader(c.augment) if any(augmented) else plain, mixer=mixer)
    return replace(plan, method=(recipe.method or supervised_method)(plan, strict, progress))


def _readable(c, recipe: NetworkRecipe, data: RunData, strict: bool, progress: bool) -> tuple:
    """(train, val, own, skipped): every image decoded once, the unreadable ones left out."""
    train, skipped_train = readable_images(data.train, strict, progress)
    val, skipped_val = readable_images(data.val, strict, progress)
    own, skipped_own = recipe.readable(c, data, strict, progress) if recipe.readable else (data.own, [])
    return train, val, own, skipped_train + skipped_val + list(skipped_own)


def _loop(c: FinetuneConfig, stages, features, augmented: list[bool], progress: bool,
          distributed: bool) -> LoopSettings:
    always_frozen = ()
    if c.freeze_transferred:
        from graft.backbones.transfer import resolve_transfer

        always_frozen = tuple(resolve_transfer(c.transfer_layers, features.trunk))
    return LoopSettings(
        stages=list(stages), lr=c.lr if c.lr != "auto" else LR, base_lr_factor=c.base_lr_factor,
        layer_decay=c.layer_decay, optimizer=c.optimizer, weight_decay=c.weight_decay, schedule=c.schedule,
        freeze_first=c.freeze_first, progress=progress, distributed=distributed, augmented=augmented,
        always_frozen=always_frozen)
