"""Training path 2: fine-tuning (head transplant, staged unfreezing, conservation training).

:func:`finetune` is what ``graft finetune`` calls. It ends in the same model artifact and run
folder as :func:`graft.recipes.frozen.fit_frozen`.
"""
from __future__ import annotations

import contextlib
import copy
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from graft.backbones import create_backbone
from graft.data.augmentation import augmentation_name
from graft.data.datasets import ImageDataset, readable_images
from graft.data.folders import ImageFolder, folder_manifest, load_image, load_train_val, manifest_changes, scan_folder
from graft.errors import DataError, GraftError, ImageDecodeError
from graft._io.files import write_atomic
from graft.recipes._run import (FitResult, as_config, check_data_unchanged, check_resumable, check_resume_arguments,
                                held_out_summary, init_distributed, load_test)
from graft.recipes.settings import FinetuneConfig, check_head_spec
from graft.heads.modules import LinearHead, MLPHead
from graft.artifacts.model import GraftModel
from graft.artifacts.novelty import record_novelty_of_network
from graft.data.preprocess import Preprocessing
from graft._io.progress import progress_bar
from graft.methods.regularization import L2SP, BatchSpectralShrinkage, LwFDistillation
from graft.artifacts.run_folder import RunDir, open_run, write_html_safely
from graft.methods import Supervised, evaluate_loader
from graft.train.callbacks import FrozenPrefix, load_checkpoint, standard_callbacks
from graft.train.distributed import is_main_process
from graft.train.loaders import training_loader
from graft.train.trainer import LoopSettings, Network, TrainData, Trainer
from graft.train.stages import parse_stages, truncated_plan

def _make_head(spec: str, in_features: int, num_classes: int):
    check_head_spec(spec)
    if spec == "linear":
        return LinearHead(in_features, num_classes)
    _, _, hidden = spec.partition(":")
    return MLPHead(in_features, num_classes, hidden=int(hidden or 256), dropout=0.5)


# Keys that runs written before they existed lack, and what those runs did.
OLDER_DEFAULTS = {"layer_decay": None, "schedule": "cosine", "mixup": 0.0, "cutmix": 0.0, "class_weight": None,
                  "sampler": "shuffle", "test_dir": None, "final": False, "pretrained": True, "transfer_layers": None,
                  "transfer_from": None, "freeze_transferred": False}


def finetune(config, out, *, strict: bool = False, progress: bool = True, overwrite: bool = False,
             **settings) -> FitResult:
    """Head transplant + staged fine-tuning; writes model, reports, history and curves to ``out``.

    ``config``: a :class:`~graft.recipes.settings.FinetuneConfig`, or the training folder with
    the config's fields as keywords (``finetune("data", "runs/ft", stages="head:5")``).
    ``lr="auto"`` runs an LR range test on the first stage (see :func:`graft.recipes.lr_find.find_lr`)
    and uses its suggestion. Head-only stages train on plain images unless ``augment_head_stage``:
    the frozen base then runs once per stage instead of once per epoch, and the head converges
    the way a linear probe does before the base starts to move (LP-FT, Kumar et al., ICLR 2022).
    Raises GraftError / DataError for bad settings or data, before anything is written.
    """
    config = as_config(FinetuneConfig, config, settings)
    return start_training(config, out, strict=strict, progress=progress, overwrite=overwrite)


def start_training(config: FinetuneConfig, out, *, strict: bool, progress: bool, overwrite: bool) -> FitResult:
    """Check everything, then open the run folder and train (shared by the recipes that train a
    network: finetune, pretrain, adapt, distill)."""
    command = config.COMMAND
    _check_settings(config)  # bad settings fail before anything is written
    settings = config.to_dict()
    with warnings.catch_warnings():  # its warnings come once, when training loads the data
        warnings.simplefilter("ignore")
        train, val = load_train_val(config.train_dir, val_dir=config.val_dir, val_fraction=config.val_fraction,
                                    seed=config.seed)  # data problems are reported before the run folder is touched
    if config.test_dir is not None:
        load_test(config.test_dir, train)
    distributed = init_distributed()
    main = is_main_process()
    settings["command"] = command
    run = open_run(out, command, overwrite=overwrite) if main else RunDir(out)
    with run.lock(command) if main else contextlib.nullcontext():
        if main:
            run.write_config({"command": command, "settings": settings})
            manifests = {"train": folder_manifest(scan_folder(config.train_dir)),
                         "val": folder_manifest(val) if config.val_dir else None}
            write_atomic(run.path / "data.json", json.dumps(manifests) + "\n")
        return _train(run, settings, strict=strict, progress=progress and main, resume=None,
                      distributed=distributed)


def _check_settings(config: FinetuneConfig) -> None:
    """What the Config cannot check alone: the stage plan, and mixing without augmented stages."""
    plan = parse_stages(config.stages)
    augmented = config.augment != "none" and (config.augment_head_stage or config.freeze_first is not None
                                              or any(stage.top_blocks != 0 for stage in plan))
    if (config.mixup or config.cutmix) and not augmented:
        warnings.warn("--mixup/--cutmix apply to augmented stages only, and this plan has none "
                      "(augmentation is off, or only head stages without --augment-head-stage)")


def continue_run(run: RunDir, saved: dict, *, given: dict, strict: bool = False, progress: bool = True) -> FitResult:
    """Continue a killed or interrupted run of a network-training recipe (finetune, pretrain,
    adapt, distill) from ``RUN/checkpoints/last.pt`` (see :func:`graft.recipes.resume.resume`)."""
    settings = {**OLDER_DEFAULTS, **saved["settings"]}
    if "augment_head_stage" not in saved["settings"]:  # older runs augmented every stage alike
        settings["augment_head_stage"] = augmentation_name(settings["augment"]) != "none"
    check_resume_arguments(run.path, settings, given)
    check_resumable(run)
    roots = {"train": settings["train_dir"], "val": settings["val_dir"], "target": settings.get("target_dir")}
    check_data_unchanged(run.path, roots)
    state = load_checkpoint(run.path / "checkpoints" / "last.pt")
    distributed = init_distributed()
    main = is_main_process()
    with run.lock(saved["command"]) if main else contextlib.nullcontext():
        return _train(run, settings, strict=strict, progress=progress and main, resume=state,
                      distributed=distributed)


class _Parts:
    """Everything ``_prepare`` builds from the settings: data, model, loaders, loop settings."""


def _prepare(s: dict, *, strict: bool, progress: bool, distributed: bool) -> _Parts:
    torch.manual_seed(s["seed"])
    np.random.seed(s["seed"])
    parts = _Parts()
    parts.plan = plan = parse_stages(s["stages"])
    train, val = load_train_val(s["train_dir"], val_dir=s["val_dir"], val_fraction=s["val_fraction"], seed=s["seed"])
    if s.get("final_pass"):  # the final refit trains on every labelled image
        train = ImageFolder(train.root, train.classes, train.records + val.records)
    parts.source = source = _source_network(s)
    preprocessing = source.preprocessing.with_size(s["image_size"]) if s["image_size"] else source.preprocessing
    parts.preprocessing = preprocessing
    parts.features = features = source.feature_net(None)
    _check_memory(features, preprocessing.size, s["batch_size"], plan)

    train, skipped_train = readable_images(train, strict, progress)
    val, skipped_val = readable_images(val, strict, progress)
    parts.train, parts.val, parts.skipped = train, val, skipped_train + skipped_val
    parts.head = new_head = _make_head(s["head"], features.output_dim(preprocessing.size), len(train.classes))
    training = {"method": "finetune", **{k: s[k] for k in ("stages", "head", "lr", "base_lr_factor",
                                                           "optimizer", "regularizer", "seed", "train_dir")}}
    parts.model = GraftModel.from_backbone(source, new_head, train.classes, preprocessing=preprocessing,
                                           training=training, features=features)
    parts.extra = _conservation(s["regularizer"], s["regularizer_weight"], source, features, new_head)
    parts.generator = generator = torch.Generator().manual_seed(s["seed"])

    augment = augmentation_name(s["augment"])
    # Which stages see augmented images: none without augmentation; head-only stages only when asked.
    augmented = [augment != "none" and (stage.top_blocks != 0 or s["augment_head_stage"]
                                        or s["freeze_first"] is not None) for stage in plan]

    counts = np.bincount(train.labels, minlength=len(train.classes))

    def loader(dataset):
        return training_loader(dataset, train.labels, s["batch_size"], s["sampler"], generator, distributed, s["seed"])

    parts.plain_loader = loader(ImageDataset(train, preprocessing, "none"))
    parts.train_loader = loader(ImageDataset(train, preprocessing, augment)) if any(augmented) \
        else parts.plain_loader
    parts.val_loader = DataLoader(ImageDataset(val, preprocessing, "none"), batch_size=s["batch_size"])
    parts.mixer = None
    if s["mixup"] or s["cutmix"]:
        from graft.methods.mixing import BatchMixer

        parts.mixer = BatchMixer(len(train.classes), mixup_alpha=s["mixup"], cutmix_alpha=s["cutmix"])
    parts.loop = LoopSettings(
        stages=plan, lr=s["lr"] if s["lr"] != "auto" else 1e-3, base_lr_factor=s["base_lr_factor"],
        layer_decay=s["layer_decay"], optimizer=s["optimizer"], weight_decay=s["weight_decay"],
        schedule=s["schedule"], freeze_first=s["freeze_first"], progress=progress,
        distributed=distributed, augmented=augmented,
        always_frozen=tuple(_transferred_units(s, features.trunk)) if s.get("freeze_transferred") else ())
    # plain fine-tuning's method (adapt and distill bring their own: _training_method)
    parts.supervised = Supervised(parts.mixer, _balanced_weights(counts) if s["class_weight"] == "balanced" else None,
                                  parts.extra, needs_images=s["regularizer"] == "lwf")  # LwF runs on the images
    parts.frozen_prefix = FrozenPrefix(encode_pooled=_pooled_encoder(parts, s["batch_size"], progress))
    parts.method = _training_method(s, parts, strict, progress)
    return parts


def _training_method(s: dict, parts: _Parts, strict: bool, progress: bool):
    """The method for this run's command; None is plain supervised fine-tuning."""
    if s.get("target_dir"):
        from graft.recipes.adapt import domain_method

        return domain_method(s, parts, strict, progress)
    if s.get("teacher"):
        from graft.recipes.distill import distillation_method

        return distillation_method(s, parts, progress)
    return None


def _transferred_units(s: dict, trunk) -> list[str]:
    from graft.backbones.transfer import resolve_transfer

    if not s.get("transfer_layers"):
        raise GraftError("--freeze-transferred needs --transfer-layers")
    return resolve_transfer(s["transfer_layers"], trunk)


def _balanced_weights(counts: np.ndarray) -> torch.Tensor:
    """scikit-learn's ``class_weight="balanced"``: n_samples / (n_classes * count_c); absent classes 0."""
    present = counts > 0
    weights = np.zeros(len(counts))
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.as_tensor(weights, dtype=torch.float32)


def _source_network(s: dict):
    """The backbone training starts from: pretrained weights, random ones (``pretrained`` off,
    as ``graft pretrain``), or a fresh network holding some layers copied from a donor
    (``transfer_layers``, from ``transfer_from`` or the backbone itself)."""
    if not s.get("transfer_layers"):
        return create_backbone(s["backbone"], weights=s["weights"], pretrained=s["pretrained"])
    from graft.backbones.transfer import copy_layers, resolve_transfer

    donor = create_backbone(s.get("transfer_from") or s["backbone"],
                            weights=None if s.get("transfer_from") else s["weights"])
    fresh = create_backbone(donor.architecture, pretrained=False)
    copy_layers(donor.model, fresh.model, resolve_transfer(s["transfer_layers"], fresh.model))
    fresh.preprocessing = donor.preprocessing  # the copied layers expect the donor's input scaling
    fresh.weights_source = f"{donor.weights_source} (layers {s['transfer_layers']}), the rest random"
    return fresh


def _check_memory(features, image_size: int, batch_size: int, plan) -> None:
    """Refuse what cannot even run forward; warn where training the whole base may not fit
    (stages that train only the top keep far fewer activations, so that is no refusal)."""
    from graft._io.memory import GIB, available_bytes, check_fits, estimate_bytes

    check_fits(features, image_size, batch_size, training=False)
    if any(stage.top_blocks is None or stage.top_blocks < 0 for stage in plan):
        need, have = estimate_bytes(features, image_size, batch_size, training=True), available_bytes()
        if have is not None and need > have:
            warnings.warn(f"training the whole network at --image-size {image_size}, --batch-size {batch_size} "
                          f"needs about {need / GIB:.1f} GiB, more than the {have / GIB:.1f} GiB available")


def _pooled_encoder(parts: _Parts, batch_size: int, progress: bool):
    """dataset -> pooled features of the current trunk through graft's feature extractor.

    Used while the whole base is frozen: it runs in ONNX Runtime with decoding in a second
    thread, and shares the on-disk feature cache with ``graft fit``/``extract`` (keyed by the
    weights' hash, so a trained trunk never gets stale vectors).
    """
    from torch.utils.data import TensorDataset

    from graft.features.extractor import FeatureExtractor

    def encode_pooled(dataset):
        if not isinstance(dataset, ImageDataset) or dataset.augment != "none":
            return None
        extractor = FeatureExtractor.from_network(parts.features, parts.preprocessing, parts.source.architecture,
                                                  batch_size=batch_size, progress=progress)
        paths = [record.path for record in dataset.records]
        found = extractor.extract(paths, labels=[record.label for record in dataset.records],
                                  desc="frozen base (features)")
        if len(found) != len(paths):  # an image stopped decoding since the check: use the plain path
            return None
        encoded = TensorDataset(torch.from_numpy(found.vectors), torch.as_tensor(found.labels, dtype=torch.long))
        encoded.engine = "cache" if found.cached == len(paths) else extractor.engine_
        return encoded

    return encode_pooled


def sweep_stage(parts: _Parts, stage, *, start=1e-6, end=1.0, steps=100, progress=True):
    """LR range test with ``stage``'s trainable set, on its frozen prefix's outputs when it can."""
    from graft.train.lr_find import lr_sweep
    from graft.train.optim import OPTIMIZERS, freeze_for_stage, param_groups
    from graft.train.prefix import cached_prefix_loaders

    loop = parts.loop
    freeze_for_stage(loop, stage, parts.features.trunk, parts.head)
    forward, loader = parts.model, parts.train_loader if loop.stage_augmented(0) else parts.plain_loader
    if not loop.stage_augmented(0) and not parts.supervised.needs_images:
        cached = cached_prefix_loaders(parts.features.trunk, parts.head, loader, None, parts.generator, progress,
                                       parts.frozen_prefix.encode_pooled)
        if cached is not None:
            forward, loader = cached[0], cached[1]

    def make_optimizer(lr):
        groups = param_groups(loop, parts.features.trunk, parts.head, lr)
        return OPTIMIZERS[loop.optimizer](groups, loop.weight_decay)

    state = parts.generator.get_state()
    try:
        return lr_sweep(forward, loader, make_optimizer, start=start, end=end, steps=steps, progress=progress)
    finally:
        parts.generator.set_state(state)  # the sweep does not change the training run's shuffles


def _train(run: RunDir, settings: dict, *, strict: bool, progress: bool, resume: dict | None,
           distributed: bool = False) -> FitResult:
    start = time.perf_counter()
    s = settings
    parts = _prepare(s, strict=strict, progress=progress, distributed=distributed)
    model, train, val = parts.model, parts.train, parts.val
    if s["lr"] == "auto":
        if "lr_found" not in s:  # a resumed run keeps the LR its sweep chose
            s["lr_found"] = _auto_lr(parts, run, progress, distributed)
            if is_main_process():
                run.write_config({"command": s.get("command", "finetune"), "settings": s})
        parts.loop.lr = s["lr_found"]
        model.training_info["lr"] = s["lr_found"]
    adapting = bool(s.get("target_dir"))
    if adapting and is_main_process() and resume is None:
        from graft.recipes.adapt import domain_distance, record_distance

        record_distance(run.path, "proxy_a_distance_before", domain_distance(parts, s["batch_size"], s["seed"]))
    callbacks = standard_callbacks(run.path / "checkpoints", run.path / "history.jsonl", patience=s["patience"],
                                   keep_last=adapting,  # adaptation selects no epoch on source validation
                                   frozen_prefix=parts.frozen_prefix)
    result = Trainer(parts.loop, callbacks).fit(
        parts.method or parts.supervised, Network(model, parts.features.trunk, parts.head),
        TrainData(parts.train_loader, parts.val_loader, parts.plain_loader, parts.generator), resume=resume)
    model.training_info.update({"best_epoch": result.best_epoch, "epochs_run": len(result.history)})
    model.eval()
    shipped = _final_refit(run, s, parts, result.best_epoch, progress, distributed) if s.get("final") else model
    if not is_main_process():  # rank 0 writes the model and reports
        return FitResult(run.path, {})
    record_novelty_of_network(run.model_dir, shipped, parts.plain_loader, parts.val_loader)
    shipped.save(run.model_dir)
    extra = {"n_train": len(train), "n_val": len(val), "best_epoch": result.best_epoch, "final_refit": bool(s.get("final")),
             "resumed_from_epoch": resume["epoch"] if resume else None, "lr": parts.loop.lr,
             "skipped": parts.skipped}
    if s.get("test_dir"):  # scored once, with the epoch validation chose
        test, skipped_test = readable_images(load_test(s["test_dir"], train), strict, progress)
        test_loader = DataLoader(ImageDataset(test, parts.preprocessing, "none"), batch_size=s["batch_size"])
        _, _, t_true, t_pred, t_probabilities = evaluate_loader(shipped, test_loader, with_probabilities=True)
        extra["test"] = held_out_summary(run.write_evaluation(
            t_true, t_pred, train.classes, {"n_test": len(test), "data_dir": s["test_dir"], "skipped": skipped_test},
            subdir="test", title=f"{Path(s['test_dir']).name} (test)", probabilities=t_probabilities,
            paths=[record.path for record in test.records], split="test"))
    if adapting:
        extra.update(_adaptation_results(run, s, parts, shipped))
    _, _, y_true, y_pred, probabilities = evaluate_loader(model, parts.val_loader, with_probabilities=True)
    extra["seconds"] = round(time.perf_counter() - start, 3)
    metrics = run.write_evaluation(y_true, y_pred, train.classes, extra,
                                   title=f"{Path(s['train_dir']).name} (fine-tuned)", probabilities=probabilities,
                                   paths=[record.path for record in val.records])
    _curves_png(result.history, run.path / "curves.png")
    run.write_split(train, val)
    run.write_config({"command": s.get("command", "finetune"), "settings": settings, "classes": train.classes,
                      "backbone_weights": parts.source.weights_source, "image_size": parts.preprocessing.size})
    write_html_safely(run.path)
    return FitResult(run.path, metrics)


def _adaptation_results(run: RunDir, s: dict, parts: _Parts, model) -> dict:
    """After adaptation: the proxy A-distance again, and the labelled target images scored
    (RUN/target/) when --target-val was given."""
    from graft.recipes.adapt import domain_distance, record_distance

    distances = record_distance(run.path, "proxy_a_distance_after", domain_distance(parts, s["batch_size"], s["seed"]))
    extra = {"adversary": s["adversary"], **distances}
    if s.get("target_val_dir"):
        loader = DataLoader(ImageDataset(parts.target_val, parts.preprocessing, "none"), batch_size=s["batch_size"])
        _, _, t_true, t_pred, t_probabilities = evaluate_loader(model, loader, with_probabilities=True)
        extra["target"] = held_out_summary(run.write_evaluation(
            t_true, t_pred, parts.train.classes, {"n_target_val": len(parts.target_val),
                                                  "data_dir": s["target_val_dir"]},
            subdir="target", title=f"{Path(s['target_val_dir']).name} (target)", probabilities=t_probabilities,
            paths=[record.path for record in parts.target_val.records], split="target"))
    return extra


def _final_refit(run: RunDir, s: dict, parts: _Parts, best_epoch: int, progress: bool, distributed: bool):
    """``--final``: train again from the source weights on training + validation images for the
    epochs validation chose (the plan cut at the best epoch), keeping the last epoch. The
    validation scores stay those of the first run; this model has no held-out set left."""
    final = {**s, "stages": truncated_plan(parts.plan, max(best_epoch, 1)), "patience": None, "final_pass": True,
             "lr": parts.loop.lr}
    again = _prepare(final, strict=False, progress=progress, distributed=distributed)
    callbacks = standard_callbacks(run.path / "checkpoints" / "final", run.path / "history-final.jsonl",
                                   keep_last=True, frozen_prefix=again.frozen_prefix)
    result = Trainer(again.loop, callbacks).fit(
        again.method or again.supervised, Network(again.model, again.features.trunk, again.head),
        TrainData(again.train_loader, again.val_loader, again.plain_loader, again.generator))
    again.model.training_info.update({"final_refit": True, "final_plan": final["stages"],
                                      "epochs_run": len(result.history), "n_fitted": len(again.train)})
    return again.model.eval()


def _auto_lr(parts: _Parts, run: RunDir, progress: bool, distributed: bool) -> float:
    """``--lr auto``: rank 0 range-tests the first stage and every process uses its suggestion."""
    lr, failure = None, None
    if is_main_process():
        try:
            sweep = sweep_stage(parts, parts.plan[0], progress=progress)
            sweep.save(run.path)
            lr = sweep.suggestion
        except GraftError as exc:
            if not distributed:
                raise
            failure = str(exc)
    if distributed:  # every rank learns the LR, or the error, so none waits forever
        import torch.distributed as dist

        box = [lr, failure]
        dist.broadcast_object_list(box, src=0)
        lr, failure = box
    if failure is not None:
        raise GraftError(failure)
    return float(lr)


def _conservation(kind, weight, source, features, head):
    """The conservation loss as ``(images, logits) -> tensor``, or None."""
    if kind is None:
        return None
    if kind == "l2sp":
        penalty = L2SP(dict(features.trunk.named_parameters()), list(head.parameters()), alpha=weight, beta=weight)
        return lambda images, logits: penalty()
    if kind == "lwf":
        source_model = copy.deepcopy(source.model).eval()
        for p in source_model.parameters():
            p.requires_grad_(False)
        old_head = source_model.get_classifier()
        distill = LwFDistillation()

        def lwf(images, logits):
            with torch.no_grad():
                source_logits = source_model(images)
            return weight * distill(old_head(features(images)), source_logits)
        return lwf
    if kind == "bss":
        # BSS acts on the features the head sees; a hook records them on every forward pass.
        shrink = BatchSpectralShrinkage(k=1, eta=weight)
        seen = {}
        head.register_forward_pre_hook(lambda module, inputs: seen.__setitem__("features", inputs[0]))
        return lambda images, logits: shrink(seen["features"])
    raise GraftError(f"unknown regularizer {kind!r}: use l2sp, lwf or bss")


def _curves_png(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", label="val")
    ax_acc.plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train")
    ax_acc.plot(epochs, [h["val_accuracy"] for h in history], "o-", label="val")
    for ax, title in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        previous = None
        for h in history:  # a dashed line where a new stage begins
            if previous is not None and h["stage"] != previous:
                ax.axvline(h["epoch"] - 0.5, color="grey", linestyle="--", linewidth=0.8)
            previous = h["stage"]
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
