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
from graft.data.folders import ImageFolder, folder_manifest, load_image, load_train_val, manifest_changes, scan_folder
from graft.defaults import DEFAULT_BACKBONE, DEFAULT_STAGES
from graft.errors import DataError, GraftError, ImageDecodeError
from graft._io.files import write_atomic
from graft.recipes.frozen import FitResult, held_out_summary, load_test
from graft.heads.modules import LinearHead, MLPHead
from graft.artifacts.model import GraftModel
from graft.data.preprocess import Preprocessing
from graft._io.progress import progress_bar
from graft.methods.regularization import L2SP, BatchSpectralShrinkage, LwFDistillation
from graft.artifacts.run_folder import RunDir, open_run, write_html_safely
from graft.train.trainer import LoopSettings, evaluate_loader, is_main_process, load_checkpoint, run_stages
from graft.train.stages import parse_stages, truncated_plan

AUGMENTATIONS = ("none", "crop-flip", "randaugment")


def augmentation_name(augment) -> str:
    """``True``/``False`` (older configs, the library's shorthand) or a name from AUGMENTATIONS."""
    if augment is True:
        return "crop-flip"
    if augment is False or augment is None:
        return "none"
    if augment not in AUGMENTATIONS:
        raise GraftError(f"unknown augmentation {augment!r}: {', '.join(AUGMENTATIONS)}")
    return augment


class ImageDataset(Dataset):
    """Decoded, preprocessed images of an ImageFolder.

    ``augment``: ``none``; ``crop-flip`` = random-resized-crop (scale 0.35-1) + horizontal
    flip; ``randaugment`` = crop-flip + RandAugment (Cubuk et al. 2020; 2 ops, magnitude 9).
    Random draws use torch's global RNG, which checkpoints save, so a resumed run sees the
    same augmentations.
    """

    def __init__(self, folder: ImageFolder, preprocessing: Preprocessing, augment="none"):
        self.records = folder.records
        self.preprocessing = preprocessing
        self.augment = augmentation_name(augment)
        if self.augment != "none":
            from torchvision.transforms import v2

            steps = [v2.RandomResizedCrop(preprocessing.size, scale=(0.35, 1.0), antialias=True),
                     v2.RandomHorizontalFlip()]
            if self.augment == "randaugment":
                steps.append(v2.RandAugment(num_ops=2, magnitude=9))
            self.random = v2.Compose(steps)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        record = self.records[index]
        image = load_image(record.path, min_side=self.preprocessing.resize_size)
        if self.augment != "none":
            array = self.preprocessing.normalize(self.random(image))
        else:
            array = self.preprocessing.to_array(image)
        return torch.from_numpy(array), record.label


def _readable(folder: ImageFolder, strict: bool, progress: bool) -> tuple[ImageFolder, list[dict]]:
    """Drop (and report) images that do not decode, before training starts."""
    keep, skipped = [], []
    bar = progress_bar(len(folder), f"checking {folder.root.name}", "img", progress)
    for i, record in enumerate(folder.records):
        try:
            load_image(record.path)
            keep.append(i)
        except ImageDecodeError as exc:
            if strict:
                raise
            warnings.warn(f"skipping {exc.path}: {exc.reason}")
            skipped.append({"path": exc.path, "reason": exc.reason})
        bar.update(1)
    bar.close()
    return folder.subset(keep), skipped


def _make_head(spec: str, in_features: int, num_classes: int):
    _check_head_spec(spec)
    if spec == "linear":
        return LinearHead(in_features, num_classes)
    _, _, hidden = spec.partition(":")
    return MLPHead(in_features, num_classes, hidden=int(hidden or 256), dropout=0.5)


# Everything that determines a fine-tuning run; saved in config.yaml so --resume can rebuild it.
_SETTINGS = ("train_dir", "val_dir", "val_fraction", "backbone", "weights", "head", "stages", "freeze_first",
             "lr", "base_lr_factor", "layer_decay", "optimizer", "weight_decay", "schedule", "image_size",
             "batch_size", "seed", "augment", "augment_head_stage", "mixup", "cutmix", "regularizer",
             "regularizer_weight", "patience", "class_weight", "sampler", "test_dir", "final", "pretrained",
             "transfer_layers", "transfer_from", "freeze_transferred", "target_dir", "target_val_dir", "adversary",
             "adversary_weight", "teacher", "temperature", "alpha")
_DEFAULTS = {"layer_decay": None, "schedule": "cosine", "augment_head_stage": False, "mixup": 0.0,
             "cutmix": 0.0, "class_weight": None, "sampler": "shuffle", "test_dir": None, "final": False,
             "pretrained": True, "transfer_layers": None, "transfer_from": None, "freeze_transferred": False,
             "target_dir": None, "target_val_dir": None, "adversary": "dann", "adversary_weight": 1.0, "teacher": None,
             "temperature": 4.0, "alpha": 0.5}  # for run folders written before these existed
_PATH_SETTINGS = ("train_dir", "val_dir", "weights", "test_dir", "target_dir", "target_val_dir", "teacher")
# every one is this module's training path, with its own training method (graft.methods)
TRAINING_COMMANDS = ("finetune", "pretrain", "adapt", "distill")


def finetune(train_dir, out, *, val_dir=None, val_fraction=None, backbone=DEFAULT_BACKBONE, weights=None,
             head="linear", stages=DEFAULT_STAGES, freeze_first=None, lr=1e-3, base_lr_factor=0.1,
             layer_decay=None, optimizer="adamw", weight_decay=1e-4, schedule="cosine", image_size=None,
             batch_size=32, seed=0, augment="crop-flip", augment_head_stage=False, mixup=0.0, cutmix=0.0,
             regularizer=None, regularizer_weight=0.01, patience=None, class_weight=None, sampler="shuffle",
             test_dir=None, final=False, pretrained=True, transfer_layers=None, transfer_from=None,
             freeze_transferred=False, target_dir=None, target_val_dir=None, adversary="dann", adversary_weight=1.0,
             teacher=None, temperature=4.0, alpha=0.5, command="finetune", strict=False, progress=True,
             overwrite=False) -> FitResult:
    """Head transplant + staged fine-tuning; writes model, reports, history and curves to ``out``.

    ``lr="auto"`` runs an LR range test on the first stage (see :func:`find_lr`) and uses its
    suggestion. Head-only stages train on plain images unless ``augment_head_stage``: the frozen
    base then runs once per stage instead of once per epoch, and the head converges the way a
    linear probe does before the base starts to move (LP-FT, Kumar et al., ICLR 2022).
    """
    if val_dir is None and val_fraction is None:
        val_fraction = 0.2
    augment = augmentation_name(augment)
    _check_settings(stages, lr, optimizer, schedule, layer_decay, mixup, cutmix, augment, augment_head_stage,
                    freeze_first)  # bad settings fail before anything is written
    _check_head_spec(head)
    _check_balancing(class_weight, sampler)
    arguments = locals()
    settings = _resolved_paths({name: arguments[name] for name in _SETTINGS})
    with warnings.catch_warnings():  # its warnings come once, when training loads the data
        warnings.simplefilter("ignore")
        train, val = load_train_val(settings["train_dir"], val_dir=settings["val_dir"], val_fraction=val_fraction,
                                    seed=seed)  # data problems are reported before the run folder is touched
    if test_dir is not None:
        load_test(settings["test_dir"], train)
    distributed = _init_distributed()
    main = is_main_process()
    if command not in TRAINING_COMMANDS:
        raise GraftError(f"unknown training command {command!r}")
    settings["command"] = command
    run = open_run(out, command, overwrite=overwrite) if main else RunDir(out)
    with run.lock(command) if main else contextlib.nullcontext():
        if main:
            run.write_config({"command": command, "settings": settings})
            manifests = {"train": folder_manifest(scan_folder(settings["train_dir"])),
                         "val": folder_manifest(val) if val_dir else None}
            write_atomic(run.path / "data.json", json.dumps(manifests) + "\n")
        return _train(run, settings, strict=strict, progress=progress and main, resume=None,
                      distributed=distributed)


def _resolved_paths(settings: dict) -> dict:
    """Paths in the settings made absolute, so a saved run does not depend on the working folder."""
    return {k: (str(Path(v).expanduser().resolve()) if k in _PATH_SETTINGS and v else v)
            for k, v in settings.items()}


def _check_head_spec(spec: str) -> None:
    if spec == "linear":
        return
    kind, _, hidden = spec.partition(":")
    if kind != "mlp" or (hidden and not (hidden.isdigit() and int(hidden) > 0)):
        raise GraftError(f"bad --head {spec!r}: use linear, or mlp:HIDDEN with HIDDEN a positive integer (mlp:256)")


def _check_balancing(class_weight, sampler) -> None:
    if class_weight not in (None, "balanced"):
        raise GraftError(f"--class-weight must be 'balanced' (or not given), got {class_weight!r}")
    if sampler not in ("shuffle", "balanced"):
        raise GraftError(f"--sampler must be shuffle or balanced, got {sampler!r}")


def is_resumable(run_dir) -> bool:
    """Does ``run_dir`` hold a fine-tuning run with a finished epoch to continue from?"""
    return (Path(run_dir) / "checkpoints" / "last.pt").is_file()


def _check_settings(stages, lr, optimizer, schedule, layer_decay, mixup, cutmix, augment, augment_head_stage,
                    freeze_first) -> None:
    from graft.train.trainer import OPTIMIZERS, SCHEDULES

    plan = parse_stages(stages)
    if lr != "auto" and not (isinstance(lr, (int, float)) and lr > 0):
        raise GraftError(f"--lr must be a positive number or 'auto', got {lr!r}")
    if optimizer not in OPTIMIZERS:
        raise GraftError(f"unknown optimizer {optimizer!r}: {', '.join(OPTIMIZERS)}")
    if schedule not in SCHEDULES:
        raise GraftError(f"unknown schedule {schedule!r}: {', '.join(SCHEDULES)}")
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise GraftError(f"--layer-decay must be in (0, 1], got {layer_decay}")
    if mixup < 0 or cutmix < 0:
        raise GraftError(f"--mixup and --cutmix must be >= 0, got {mixup} and {cutmix}")
    augmented = augment != "none" and (augment_head_stage or freeze_first is not None
                                       or any(stage.top_blocks != 0 for stage in plan))
    if (mixup or cutmix) and not augmented:
        warnings.warn("--mixup/--cutmix apply to augmented stages only, and this plan has none "
                      "(augmentation is off, or only head stages without --augment-head-stage)")


def resume_finetune(run_dir, *, given: dict | None = None, strict=False, progress=True) -> FitResult:
    """Continue a killed or interrupted ``finetune`` run from ``RUN_DIR/checkpoints/last.pt``.

    ``given`` holds the settings the user repeated on the command line: any that differ from
    the saved ones is an error listing them all (a run cannot change course halfway; a finished
    run is not extended: start a new one). Before training, the data folders are compared with
    what the run started on; files gone, added or changed, or a class added, are an error.
    """
    import yaml

    run = RunDir(run_dir)
    config_path = run.path / "config.yaml"
    if not config_path.exists():
        raise GraftError(f"cannot resume: {config_path} does not exist (not a finetune run folder)")
    config = yaml.safe_load(config_path.read_text()) or {}
    if config.get("command") not in TRAINING_COMMANDS or "settings" not in config:
        raise GraftError(f"cannot resume: {run.path} was not written by graft {', '.join(TRAINING_COMMANDS)}")
    settings = {**_DEFAULTS, **config["settings"]}
    if "augment_head_stage" not in config["settings"]:  # older runs augmented every stage alike
        settings["augment_head_stage"] = augmentation_name(settings["augment"]) != "none"
    _check_resume_arguments(run.path, settings, given or {})
    if (run.path / "metrics.json").exists():
        raise GraftError(f"{run.path} is a finished run (metrics.json written): nothing to resume. To train "
                         "longer or differently, start a new run with another -o (or --overwrite this one)")
    if not is_resumable(run.path):
        raise GraftError(f"cannot resume {run.path}: no epoch finished before it stopped (no checkpoints/last.pt); "
                         "run the same command again without --resume to start over")
    _check_data_unchanged(run.path, settings)
    state = load_checkpoint(run.path / "checkpoints" / "last.pt")
    distributed = _init_distributed()
    main = is_main_process()
    with run.lock(config["command"]) if main else contextlib.nullcontext():
        return _train(run, settings, strict=strict, progress=progress and main, resume=state,
                      distributed=distributed)


def _check_resume_arguments(run_dir: Path, saved: dict, given: dict) -> None:
    given = _resolved_paths(given)
    conflicts = []
    for key, value in given.items():
        if key not in saved:
            raise GraftError(f"unknown setting {key!r}")
        if value != saved[key] and not (isinstance(value, float) and isinstance(saved[key], (int, float))
                                        and abs(value - saved[key]) <= 1e-12 * max(1.0, abs(value))):
            conflicts.append(f"{key} {value!r} (the run has {saved[key]!r})")
    if conflicts:
        raise GraftError(f"--resume {run_dir} continues the run with its saved settings; these differ: "
                         + "; ".join(conflicts) + ". Leave them out, or start a new run with another -o")


def _check_data_unchanged(run_dir: Path, settings: dict) -> None:
    manifest_path = run_dir / "data.json"
    if not manifest_path.exists():  # run folders written before manifests existed
        return
    manifest = json.loads(manifest_path.read_text())
    problems = []
    for part, root in (("train", settings["train_dir"]), ("val", settings["val_dir"])):
        if manifest.get(part) is None or root is None:
            continue
        try:
            now = scan_folder(root, classes=None if part == "train" else manifest["train"]["classes"])
        except DataError as exc:
            problems.append(str(exc))
            continue
        problems += [f"{root}: {change}" for change in manifest_changes(manifest[part], folder_manifest(now))]
    if problems:
        raise GraftError("cannot resume: the data changed since the run started (the split, the classes or the "
                         "images would differ): " + "; ".join(problems)
                         + ". Restore the data, or start a new run with another -o or --overwrite")


def find_lr(train_dir, out, *, val_dir=None, val_fraction=None, backbone=DEFAULT_BACKBONE, weights=None,
            head="linear", stage="head", base_lr_factor=0.1, layer_decay=None, optimizer="adamw",
            weight_decay=1e-4, image_size=None, batch_size=32, seed=0, augment="none", start=1e-6,
            end=1.0, steps=100, strict=False, progress=True, overwrite=False):
    """LR range test for one stage of fine-tuning (``graft lr-find``): the model ``finetune``
    would build, trained for ``steps`` batches of the training split at exponentially growing
    LR. Writes ``lr_find.png`` and ``lr_find.json`` to ``out``; returns the
    :class:`~graft.train.lr_find.LRSweep`. With nothing but the head trainable and no
    augmentation, the frozen base runs once over the images and the sweep runs on its outputs.
    """
    if val_dir is None and val_fraction is None:
        val_fraction = 0.2
    plan = parse_stages(f"{stage}:1")
    settings = {**_DEFAULTS, "train_dir": str(train_dir), "val_dir": val_dir, "val_fraction": val_fraction,
                "backbone": backbone, "weights": weights, "head": head, "stages": f"{stage}:1",
                "freeze_first": None, "lr": 1e-3, "base_lr_factor": base_lr_factor, "layer_decay": layer_decay,
                "optimizer": optimizer, "weight_decay": weight_decay, "schedule": "cosine",
                "image_size": image_size, "batch_size": batch_size, "seed": seed,
                "augment": augmentation_name(augment), "augment_head_stage": True, "mixup": 0.0, "cutmix": 0.0,
                "regularizer": None, "regularizer_weight": 0.0, "patience": None, "class_weight": None,
                "sampler": "shuffle"}
    _check_head_spec(head)
    with warnings.catch_warnings():  # its warnings come once, when the sweep loads the data
        warnings.simplefilter("ignore")
        load_train_val(train_dir, val_dir=val_dir, val_fraction=val_fraction, seed=seed)  # data errors first
    run = open_run(out, "lr-find", overwrite=overwrite)
    with run.lock("lr-find"):
        run.write_config({"command": "lr-find", "settings": _resolved_paths(settings),
                          "start": start, "end": end, "steps": steps})
        parts = _prepare(settings, strict=strict, progress=progress, distributed=False)
        sweep = _sweep_stage(parts, plan[0], start=start, end=end, steps=steps, progress=progress)
        sweep.save(run.path)
    return sweep


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

    train, skipped_train = _readable(train, strict, progress)
    val, skipped_val = _readable(val, strict, progress)
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
    if s["sampler"] == "balanced" and distributed:
        raise GraftError("--sampler balanced is not supported under torchrun (DDP shards with its own sampler); "
                         "use --class-weight balanced instead")

    def loader(dataset):
        if distributed:  # each process trains on its own 1/world_size of every epoch
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(dataset, shuffle=True, seed=s["seed"], drop_last=True)
            return DataLoader(dataset, batch_size=s["batch_size"], sampler=sampler, drop_last=True)
        drop_last = len(train) > s["batch_size"]
        if s["sampler"] == "balanced":  # each class drawn equally often, with replacement
            from torch.utils.data import WeightedRandomSampler

            weights = torch.as_tensor(1.0 / np.maximum(counts[train.labels], 1), dtype=torch.double)
            sampler = WeightedRandomSampler(weights, len(train), replacement=True, generator=generator)
            return DataLoader(dataset, batch_size=s["batch_size"], sampler=sampler, drop_last=drop_last)
        return DataLoader(dataset, batch_size=s["batch_size"], shuffle=True, generator=generator,
                          drop_last=drop_last)

    parts.plain_loader = loader(ImageDataset(train, preprocessing, "none"))
    parts.train_loader = loader(ImageDataset(train, preprocessing, augment)) if any(augmented) \
        else parts.plain_loader
    parts.val_loader = DataLoader(ImageDataset(val, preprocessing, "none"), batch_size=s["batch_size"])
    mixer = None
    if s["mixup"] or s["cutmix"]:
        from graft.methods.mixing import BatchMixer

        mixer = BatchMixer(len(train.classes), mixup_alpha=s["mixup"], cutmix_alpha=s["cutmix"])
    parts.loop = LoopSettings(
        stages=plan, lr=s["lr"] if s["lr"] != "auto" else 1e-3, base_lr_factor=s["base_lr_factor"],
        layer_decay=s["layer_decay"], optimizer=s["optimizer"], weight_decay=s["weight_decay"],
        schedule=s["schedule"], patience=s["patience"], freeze_first=s["freeze_first"], progress=progress,
        distributed=distributed, augmented=augmented, mixer=mixer,
        reuse_frozen_prefix=s["regularizer"] != "lwf",  # LwF needs the images themselves
        encode_pooled=_pooled_encoder(parts, s["batch_size"], progress),
        class_weights=_balanced_weights(counts) if s["class_weight"] == "balanced" else None,
        always_frozen=tuple(_transferred_units(s, features.trunk)) if s.get("freeze_transferred") else (),
        # adaptation selects no epoch on source validation: the last one is kept
        keep_last=bool(s.get("target_dir")) or bool(s.get("final_pass")))
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


def _sweep_stage(parts: _Parts, stage, *, start=1e-6, end=1.0, steps=100, progress=True):
    """LR range test with ``stage``'s trainable set, on its frozen prefix's outputs when it can."""
    from graft.train.trainer import OPTIMIZERS, cached_prefix_loaders, freeze_for_stage, param_groups
    from graft.train.lr_find import lr_sweep

    loop = parts.loop
    freeze_for_stage(loop, stage, parts.features.trunk, parts.head)
    forward, loader = parts.model, parts.train_loader if loop.stage_augmented(0) else parts.plain_loader
    if not loop.stage_augmented(0) and loop.reuse_frozen_prefix:
        cached = cached_prefix_loaders(parts.features.trunk, parts.head, loader, None, parts.generator, progress,
                                       loop.encode_pooled)
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


def _init_distributed() -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); gloo runs on CPUs."""
    import os

    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return True


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
    result = run_stages(model, parts.features.trunk, parts.head, parts.train_loader, parts.val_loader, parts.loop,
                        run.path / "checkpoints", run.path / "history.jsonl", parts.extra,
                        generator=parts.generator, resume=resume, plain_train_loader=parts.plain_loader,
                        method=parts.method)
    model.training_info.update({"best_epoch": result.best_epoch, "epochs_run": len(result.history)})
    model.eval()
    shipped = _final_refit(run, s, parts, result.best_epoch, progress, distributed) if s.get("final") else model
    if not is_main_process():  # rank 0 writes the model and reports
        return FitResult(run.path, {})
    shipped.save(run.model_dir)
    extra = {"n_train": len(train), "n_val": len(val), "best_epoch": result.best_epoch, "final_refit": bool(s.get("final")),
             "resumed_from_epoch": resume["epoch"] if resume else None, "lr": parts.loop.lr,
             "skipped": parts.skipped}
    if s.get("test_dir"):  # scored once, with the epoch validation chose
        test, skipped_test = _readable(load_test(s["test_dir"], train), strict, progress)
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
    again.loop.keep_last = True
    result = run_stages(again.model, again.features.trunk, again.head, again.train_loader, again.val_loader,
                        again.loop, run.path / "checkpoints" / "final", run.path / "history-final.jsonl",
                        again.extra, generator=again.generator, plain_train_loader=again.plain_loader,
                        method=again.method)
    again.model.training_info.update({"final_refit": True, "final_plan": final["stages"],
                                      "epochs_run": len(result.history), "n_fitted": len(again.train)})
    return again.model.eval()


def _auto_lr(parts: _Parts, run: RunDir, progress: bool, distributed: bool) -> float:
    """``--lr auto``: rank 0 range-tests the first stage and every process uses its suggestion."""
    lr, failure = None, None
    if is_main_process():
        try:
            sweep = _sweep_stage(parts, parts.plan[0], progress=progress)
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
