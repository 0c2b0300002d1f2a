"""What every recipe that trains a network shares: build the source network, head, data and
loaders from its Config; hand the recipe's method to the :class:`~graft.train.trainer.Trainer`;
write the model and reports. A recipe (finetune, pretrain, adapt, distill) brings only its
:class:`Hooks`: the method it trains with, and what it measures before and after."""
from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from graft._io.memory import check_training_memory
from graft.artifacts.model import GraftModel
from graft.artifacts.novelty import record_novelty_of_network
from graft.artifacts.run_folder import RunDir, open_run, write_html_safely
from graft.backbones import create_backbone
from graft.data.datasets import ImageDataset, readable_images
from graft.data.folders import ImageFolder, load_train_val
from graft.defaults import LR
from graft.errors import DataError, GraftError
from graft.heads.modules import LinearHead, MLPHead
from graft.methods import Supervised, evaluate_loader
from graft.methods.regularization import conservation_term
from graft.methods.supervised import balanced_class_weights
from graft.recipes._lr_sweep import auto_lr, saved_settings, sweep_stage  # noqa: F401  (lr_find's seam)
from graft.recipes._run import (
    MANIFEST_PARTS,
    FitResult,
    check_data_unchanged,
    check_not_an_input,
    check_on_network,
    check_resumable,
    check_resume_arguments,
    check_test,
    init_distributed,
    load_test,
    run_manifests,
    score_folder,
    write_manifest,
)
from graft.recipes.settings import FinetuneConfig
from graft.recipes.settings.versions import settings_record
from graft.reporting.plots import training_curves_png
from graft.reporting.summary import validation_title
from graft.train.callbacks import FrozenPrefix, load_checkpoint, standard_callbacks
from graft.train.distributed import is_main_process
from graft.train.loaders import training_loader
from graft.train.prefix import pooled_encoder
from graft.train.stages import parse_stages, truncated_plan
from graft.train.trainer import LoopSettings, Network, TrainData, Trainer


@dataclass
class Parts:
    """Everything :func:`prepare` builds from a Config: data, network, loaders, loop settings."""

    config: FinetuneConfig
    plan: list
    source: object  # the Backbone training starts from
    preprocessing: object
    features: object  # the feature network (trunk + pooling)
    train: ImageFolder
    val: ImageFolder
    head: torch.nn.Module = None
    model: GraftModel = None
    skipped: list = field(default_factory=list)
    generator: torch.Generator = None
    train_loader: DataLoader = None
    plain_loader: DataLoader = None
    val_loader: DataLoader = None
    loop: LoopSettings = None
    mixer: object = None
    frozen_prefix: FrozenPrefix = None
    extras: dict = field(default_factory=dict)  # what a recipe's hooks keep (target folders, ...)


@dataclass
class Hooks:
    """What a network-training recipe adds to the shared path.

    ``method(parts, strict, progress) -> TrainingMethod``: how the network learns (the
    supervised method of :func:`supervised_method` by default). ``dataset(parts, dataset) ->
    Dataset``: what one training item is (distillation adds its index); the loaders are built
    from it by :func:`graft.train.loaders.training_loader` whatever the method.
    ``before(run, parts)`` runs before the first epoch of a new run, ``results(run, parts,
    model) -> dict`` after training (extra metrics). ``keep_last``: keep the last epoch instead
    of the best on validation (adaptation selects no epoch on the source)."""

    method: Callable = None
    dataset: Callable = None
    before: Callable = None
    results: Callable = None
    keep_last: bool = False


def supervised_method(parts: Parts, strict: bool = False, progress: bool = True) -> Supervised:
    """Cross-entropy with the Config's mixing, class weights and conservation term."""
    c = parts.config
    weights = balanced_class_weights(parts.train.labels, len(parts.train.classes)) \
        if c.class_weight == "balanced" else None
    regularizer = conservation_term(c.regularizer, c.regularizer_weight, parts.source.model, parts.features,
                                    parts.head)
    return Supervised(parts.mixer, weights, regularizer, needs_images=c.regularizer == "lwf")  # LwF needs images


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


def decided(path, train: ImageFolder, val: ImageFolder) -> tuple[ImageFolder, ImageFolder]:
    """``train`` and ``val`` with ``--exclude``'s decisions applied (:mod:`graft.curation.decisions`):
    listed images left out, relabelled ones moved; one warning counts them. DataError when the
    file is unreadable, names a class the data lacks, or leaves no validation image."""
    from graft.curation.decisions import apply_decisions, read_decisions

    decisions = read_decisions(path)
    (train, in_train), (val, in_val) = apply_decisions(train, decisions), apply_decisions(val, decisions)
    if not len(val):
        raise DataError(f"--exclude {path} leaves no validation image: give another --val, or edit the file")
    excluded, relabelled = in_train["excluded"] + in_val["excluded"], in_train["relabelled"] + in_val["relabelled"]
    unused = len(decisions.exclude) + len(decisions.relabel) - excluded - relabelled
    warnings.warn(f"--exclude {path}: left out {excluded} image(s), relabelled {relabelled}; {unused} of its rows "
                  "name no image of these folders", stacklevel=2)
    return train, val


def _network(c: FinetuneConfig, strict: bool, progress: bool, final_pass: bool) -> Parts:
    """Data and network of a run: the split, the source network, the readable images, the model."""
    plan = parse_stages(c.stages)
    train, val = load_train_val(c.train_dir, val_dir=c.val_dir, val_fraction=c.val_fraction, seed=c.seed,
                                balanced="balanced" in (c.class_weight, c.sampler))
    if c.exclude is not None:  # graft audit's decisions, acted on in memory: no file changes
        train, val = decided(c.exclude, train, val)
    if final_pass:  # the final refit trains on every labelled image
        train = ImageFolder(train.root, train.classes, train.records + val.records)
    source = source_network(c)
    preprocessing = source.preprocessing.with_size(c.image_size) if c.image_size else source.preprocessing
    features = source.feature_net(None)
    check_training_memory(features, preprocessing.size, c.batch_size,
                          whole_base=any(stage.top_blocks is None or stage.top_blocks < 0 for stage in plan))
    train, skipped_train = readable_images(train, strict, progress)
    val, skipped_val = readable_images(val, strict, progress)
    parts = Parts(c, plan, source, preprocessing, features, train, val, skipped=skipped_train + skipped_val)
    parts.head = make_head(c.head, features.output_dim(preprocessing.size), len(train.classes))
    parts.model = GraftModel.from_backbone(source, parts.head, train.classes, preprocessing=preprocessing,
                                           training=c.training_record(), features=features)
    return parts


def prepare(c: FinetuneConfig, hooks: Hooks, *, strict: bool, progress: bool, distributed: bool,
            final_pass: bool = False) -> Parts:
    """Everything a run trains with, built from its Config (seeded first, so it repeats)."""
    torch.manual_seed(c.seed)
    np.random.seed(c.seed)
    parts = _network(c, strict, progress, final_pass)
    parts.generator = torch.Generator().manual_seed(c.seed)
    # Which stages see augmented images: none without augmentation; head-only stages only when asked.
    augmented = [c.augment != "none" and (stage.top_blocks != 0 or c.augment_head_stage or c.freeze_first is not None)
                 for stage in parts.plan]

    def loader(augment):
        dataset = ImageDataset(parts.train, parts.preprocessing, augment)
        dataset = hooks.dataset(parts, dataset) if hooks.dataset else dataset
        return training_loader(dataset, parts.train.labels, c.batch_size, c.sampler, parts.generator, distributed,
                               c.seed)

    parts.plain_loader = loader("none")
    parts.train_loader = loader(c.augment) if any(augmented) else parts.plain_loader
    parts.val_loader = DataLoader(ImageDataset(parts.val, parts.preprocessing, "none"), batch_size=c.batch_size)
    if c.mixup or c.cutmix:
        from graft.methods.mixing import BatchMixer

        parts.mixer = BatchMixer(len(parts.train.classes), mixup_alpha=c.mixup, cutmix_alpha=c.cutmix)
    always_frozen = ()
    if c.freeze_transferred:
        from graft.backbones.transfer import resolve_transfer

        always_frozen = tuple(resolve_transfer(c.transfer_layers, parts.features.trunk))
    parts.loop = LoopSettings(
        stages=parts.plan, lr=c.lr if c.lr != "auto" else LR, base_lr_factor=c.base_lr_factor,
        layer_decay=c.layer_decay, optimizer=c.optimizer, weight_decay=c.weight_decay, schedule=c.schedule,
        freeze_first=c.freeze_first, progress=progress, distributed=distributed, augmented=augmented,
        always_frozen=always_frozen)
    parts.frozen_prefix = FrozenPrefix(encode_pooled=pooled_encoder(parts.features, parts.preprocessing,
                                                                    parts.source.architecture, c.batch_size, progress))
    return parts


def _fit(parts: Parts, method, callbacks, resume=None):
    network = Network(parts.model, parts.features.trunk, parts.head)
    data = TrainData(parts.train_loader, parts.val_loader, parts.plain_loader, parts.generator)
    return Trainer(parts.loop, callbacks).fit(method, network, data, resume=resume)


def start_training(config: FinetuneConfig, out, hooks: Hooks, *, strict: bool, progress: bool,
                   overwrite: bool) -> FitResult:
    """Check everything (settings, data, test folder), then open the run folder and train."""
    _check_plan(config)
    with warnings.catch_warnings():  # its warnings come once, when training loads the data
        warnings.simplefilter("ignore")
        train, val = load_train_val(config.train_dir, val_dir=config.val_dir, val_fraction=config.val_fraction,
                                    seed=config.seed)  # data problems are reported before the run folder is touched
        if config.exclude is not None:
            train, val = decided(config.exclude, train, val)
    check_test(config, train, val)
    check_on_network(config)
    check_not_an_input(out, config)
    distributed = init_distributed()
    main = is_main_process()
    run = open_run(out, config.COMMAND, overwrite=overwrite) if main else RunDir(out)
    with run.lock(config.COMMAND) if main else contextlib.nullcontext():
        if main:
            run.write_config(settings_record(config.COMMAND, config.to_dict()))
            write_manifest(run, run_manifests(config, train.classes))
        return train_network(run, config, hooks, strict=strict, progress=progress and main, resume=None,
                             distributed=distributed)


def _check_plan(config: FinetuneConfig) -> None:
    """What the Config cannot check alone: the stage plan, and mixing without augmented stages."""
    plan = parse_stages(config.stages)
    augmented = config.augment != "none" and (config.augment_head_stage or config.freeze_first is not None
                                              or any(stage.top_blocks != 0 for stage in plan))
    if (config.mixup or config.cutmix) and not augmented:
        warnings.warn("--mixup/--cutmix apply to augmented stages only, and this plan has none "
                      "(augmentation is off, or only head stages without --augment-head-stage)")


# Settings every training run has saved since the first version: one missing means a damaged file.
SAVED_SINCE_THE_FIRST_RUN = ("train_dir", "backbone", "stages", "augment", "seed")


def continue_training(run: RunDir, saved: dict, config_cls, hooks: Hooks, *, given: dict, strict: bool,
                      progress: bool) -> FitResult:
    """Continue a killed or interrupted run from ``RUN/checkpoints/last.pt`` with its saved
    settings (see :func:`graft.recipes.resume.resume`)."""
    where, missing = run.path / "config.yaml", [k for k in SAVED_SINCE_THE_FIRST_RUN if k not in saved["settings"]]
    if missing:  # a cut file can still parse: what every run has saved must be there
        raise GraftError(f"{where} lacks {', '.join(missing)}: the file is cut short or was edited")
    settings = saved["settings"]  # at this graft's settings version (read_saved upgraded an older run's)
    check_resume_arguments(run.path, settings, given, config_cls)
    check_resumable(run)
    check_data_unchanged(run.path, {part: settings.get(key) for part, key in MANIFEST_PARTS.items()})
    lr_found = settings.get("lr_found")  # a resumed run keeps the LR its sweep chose
    try:
        config = config_cls.from_dict(settings)
    except GraftError as exc:  # saved settings a new run would refuse: the file was cut short or edited
        raise GraftError(f"{where}: {exc}") from None
    check_test(config)  # what a test folder shares with the training images is said before training goes on
    state = load_checkpoint(run.path / "checkpoints" / "last.pt")
    distributed = init_distributed()
    main = is_main_process()
    with run.lock(saved["command"]) if main else contextlib.nullcontext():
        return train_network(run, config, hooks, strict=strict, progress=progress and main, resume=state,
                             distributed=distributed, lr_found=lr_found)


def train_network(run: RunDir, config: FinetuneConfig, hooks: Hooks, *, strict: bool, progress: bool,
                  resume: dict | None, distributed: bool = False, lr_found: float | None = None) -> FitResult:
    """Prepare, train (resuming from ``resume``), optionally refit (``final``), then write the
    model, metrics.json, reports, curves and config.yaml into ``run``."""
    start = time.perf_counter()
    parts = prepare(config, hooks, strict=strict, progress=progress, distributed=distributed)
    method = (hooks.method or supervised_method)(parts, strict, progress)
    if config.lr == "auto":
        lr_found = lr_found if lr_found is not None else auto_lr(run, parts, method, progress, distributed)
        parts.loop.lr = lr_found
        parts.model.training_info["lr"] = lr_found
    if is_main_process() and resume is None and config.pretrained and not config.transfer_layers:
        _warn_near_copies(parts, progress)
    if hooks.before and is_main_process() and resume is None:
        hooks.before(run, parts)
    callbacks = standard_callbacks(run.path / "checkpoints", run.path / "history.jsonl", patience=config.patience,
                                   keep_last=hooks.keep_last, frozen_prefix=parts.frozen_prefix,
                                   monitor=config.monitor, mode=config.mode)
    result = _fit(parts, method, callbacks, resume)
    # best_epoch: the epoch whose weights the model holds (the last one when the recipe keeps it)
    kept = {"best_epoch": result.kept_epoch,
            "epoch_kept_by": "last epoch" if hooks.keep_last else KEPT_BY.get(config.monitor, config.monitor)}
    parts.model.training_info.update({**kept, "epochs_run": len(result.history)})
    parts.model.eval()
    shipped = _final_refit(run, parts, hooks, result.best_epoch, progress, distributed) if config.final \
        else parts.model
    if not is_main_process():  # rank 0 writes the model and reports
        return FitResult(run.path, {})
    record_novelty_of_network(run.model_dir, shipped, parts.plain_loader, parts.val_loader)
    shipped.save(run.model_dir)
    extra = {"n_train": len(parts.train), "n_val": len(parts.val), **kept,
             "final_refit": config.final, "resumed_from_epoch": resume["epoch"] if resume else None,
             "lr": parts.loop.lr, "skipped": parts.skipped}
    extra.update(_held_out_results(run, parts, hooks, shipped, strict, progress))
    metrics = _write_reports(run, parts, result.history, extra, start)
    run.write_config(settings_record(config.COMMAND, saved_settings(config, lr_found), classes=parts.train.classes,
                                     backbone_weights=parts.source.weights_source, image_size=parts.preprocessing.size))
    write_html_safely(run.path)
    return FitResult(run.path, metrics)


def _warn_near_copies(parts: Parts, progress: bool) -> None:
    """Warn when validation holds a near copy of a training image, on the source network's
    pooled features (the on-disk cache the frozen prefix reads too: a head stage first reuses them)."""
    from graft.curation.copies import warn_near_copies
    from graft.features.extractor import FeatureExtractor

    extractor = FeatureExtractor.from_network(parts.features, parts.preprocessing, parts.source.architecture,
                                              batch_size=parts.config.batch_size, progress=progress)
    warn_near_copies({name: extractor.extract([record.path for record in folder.records], desc=f"near copies ({name})")
                      for name, folder in (("train", parts.train), ("val", parts.val))})


def _held_out_results(run: RunDir, parts: Parts, hooks: Hooks, model, strict: bool, progress: bool) -> dict:
    """The test folder scored once, with the epoch validation chose; the recipe's own results."""
    c, extra = parts.config, {}
    if c.test_dir:
        with warnings.catch_warnings():  # said before training (start_training, continue_training)
            warnings.simplefilter("ignore")
            test = load_test(c.test_dir, parts.train)
        test, skipped = readable_images(test, strict, progress)
        extra["test"] = score_folder(run, model, test, subdir="test", title=f"{test.root.name} (test)",
                                     batch_size=c.batch_size, extra={"n_test": len(test), "skipped": skipped})
    if hooks.results:
        extra.update(hooks.results(run, parts, model))
    return extra


def _write_reports(run: RunDir, parts: Parts, history: list[dict], extra: dict, start: float) -> dict:
    _, _, y_true, y_pred, probabilities = evaluate_loader(parts.model, parts.val_loader, with_probabilities=True)
    extra["seconds"] = round(time.perf_counter() - start, 3)
    metrics = run.write_evaluation(y_true, y_pred, parts.train.classes, extra,
                                   title=validation_title(parts.val.root, parts.train.root, "fine-tuned"),
                                   probabilities=probabilities,
                                   paths=[record.path for record in parts.val.records])
    training_curves_png(history, run.path / "curves.png")
    run.write_split(parts.train, parts.val)
    return metrics


# what graft.json's training record says picked the kept epoch, per --monitor
KEPT_BY = {"val_accuracy": "validation accuracy", "val_loss": "validation loss"}


def _final_refit(run: RunDir, parts: Parts, hooks: Hooks, best_epoch: int, progress: bool, distributed: bool):
    """``--final``: train again from the source weights on training + validation images for the
    epochs validation chose (the plan cut at the best epoch), keeping the last epoch. The
    validation scores stay those of the first run; this model has no held-out set left."""
    final = parts.config.replace(stages=truncated_plan(parts.plan, max(best_epoch, 1)), patience=None,
                                 lr=parts.loop.lr)
    again = prepare(final, hooks, strict=False, progress=progress, distributed=distributed, final_pass=True)
    method = (hooks.method or supervised_method)(again, False, progress)
    callbacks = standard_callbacks(run.path / "checkpoints" / "final", run.path / "history-final.jsonl",
                                   keep_last=True, frozen_prefix=again.frozen_prefix)
    result = _fit(again, method, callbacks)
    again.model.training_info.update({"final_refit": True, "final_plan": final.stages, "best_epoch": result.kept_epoch,
                                      "epoch_kept_by": "last epoch", "epochs_run": len(result.history),
                                      "n_fitted": len(again.train)})
    return again.model.eval()
