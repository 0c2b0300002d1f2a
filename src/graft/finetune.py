"""Training path 2: fine-tuning (head transplant, staged unfreezing, conservation training).

:func:`finetune` is what ``graft finetune`` calls. It ends in the same model artifact and run
folder as :func:`graft.fit.fit_frozen`.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .backbones import create_backbone
from .data import ImageFolder, load_image, load_train_val
from .defaults import DEFAULT_BACKBONE
from .errors import GraftError, ImageDecodeError
from .fit import FitResult
from .heads import LinearHead, MLPHead
from .model import GraftModel
from .preprocess import Preprocessing
from .progress import progress_bar
from .regularizers import L2SP, LwFDistillation
from .runs import RunDir
from .train.loop import LoopSettings, evaluate_loader, is_main_process, load_checkpoint, run_stages
from .train.stages import parse_stages

DEFAULT_STAGES = "head:3,top2:3"


class ImageDataset(Dataset):
    """Decoded, preprocessed images of an ImageFolder; random crop + flip when ``augment``."""

    def __init__(self, folder: ImageFolder, preprocessing: Preprocessing, augment: bool):
        self.records = folder.records
        self.preprocessing = preprocessing
        self.augment = augment
        if augment:
            from torchvision.transforms import v2

            self.random = v2.Compose([
                v2.RandomResizedCrop(preprocessing.size, scale=(0.35, 1.0), antialias=True),
                v2.RandomHorizontalFlip(),
            ])

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        record = self.records[index]
        image = load_image(record.path, min_side=self.preprocessing.resize_size)
        if self.augment:
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
            import warnings

            warnings.warn(f"skipping {exc.path}: {exc.reason}")
            skipped.append({"path": exc.path, "reason": exc.reason})
        bar.update(1)
    bar.close()
    return folder.subset(keep), skipped


def _make_head(spec: str, in_features: int, num_classes: int):
    if spec == "linear":
        return LinearHead(in_features, num_classes)
    if spec.startswith("mlp"):
        _, _, hidden = spec.partition(":")
        if hidden and not hidden.isdigit():
            raise GraftError(f"bad head {spec!r}: use linear or mlp:HIDDEN, e.g. mlp:256")
        return MLPHead(in_features, num_classes, hidden=int(hidden or 256), dropout=0.5)
    raise GraftError(f"unknown head {spec!r}: use linear or mlp:HIDDEN")


# Everything that determines a fine-tuning run; saved in config.yaml so --resume can rebuild it.
_SETTINGS = ("train_dir", "val_dir", "val_fraction", "backbone", "weights", "head", "stages", "freeze_first",
             "lr", "base_lr_factor", "optimizer", "weight_decay", "image_size", "batch_size", "seed",
             "augment", "regularizer", "regularizer_weight", "patience")


def finetune(train_dir, out, *, val_dir=None, val_fraction=None, backbone=DEFAULT_BACKBONE, weights=None,
             head="linear", stages=DEFAULT_STAGES, freeze_first=None, lr=1e-3, base_lr_factor=0.1,
             optimizer="adamw", weight_decay=1e-4, image_size=None, batch_size=32, seed=0,
             augment=True, regularizer=None, regularizer_weight=0.01, patience=None, strict=False,
             progress=True) -> FitResult:
    """Head transplant + staged fine-tuning; writes model, reports, history and curves to ``out``."""
    if val_dir is None and val_fraction is None:
        val_fraction = 0.2
    parse_stages(stages)  # a bad plan fails before anything is written
    arguments = locals()
    settings = {name: arguments[name] for name in _SETTINGS}
    settings["train_dir"] = str(Path(train_dir).resolve())
    settings["val_dir"] = str(Path(val_dir).resolve()) if val_dir else None
    settings["weights"] = str(Path(weights).resolve()) if weights else None
    distributed = _init_distributed()
    run = RunDir(out)
    if is_main_process():
        (run.path / "history.jsonl").unlink(missing_ok=True)
        run.write_config({"command": "finetune", "settings": settings})
    return _train(run, settings, strict=strict, progress=progress and is_main_process(), resume=None,
                  distributed=distributed)


def resume_finetune(run_dir, *, strict=False, progress=True) -> FitResult:
    """Continue a killed or interrupted ``finetune`` run from ``RUN_DIR/checkpoints/last.pt``."""
    import yaml

    run = RunDir(run_dir)
    config_path = run.path / "config.yaml"
    if not config_path.exists():
        raise GraftError(f"cannot resume: {config_path} does not exist (not a finetune run folder)")
    config = yaml.safe_load(config_path.read_text()) or {}
    if config.get("command") != "finetune" or "settings" not in config:
        raise GraftError(f"cannot resume: {run.path} was not written by graft finetune")
    state = load_checkpoint(run.path / "checkpoints" / "last.pt")
    distributed = _init_distributed()
    return _train(run, config["settings"], strict=strict, progress=progress and is_main_process(),
                  resume=state, distributed=distributed)


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
    torch.manual_seed(s["seed"])
    np.random.seed(s["seed"])
    plan = parse_stages(s["stages"])
    train, val = load_train_val(s["train_dir"], val_dir=s["val_dir"], val_fraction=s["val_fraction"], seed=s["seed"])
    train, skipped_train = _readable(train, strict, progress)
    val, skipped_val = _readable(val, strict, progress)

    source = create_backbone(s["backbone"], weights=s["weights"])
    preprocessing = source.preprocessing.with_size(s["image_size"]) if s["image_size"] else source.preprocessing
    features = source.feature_net(None)
    new_head = _make_head(s["head"], features.output_dim(preprocessing.size), len(train.classes))
    training = {"method": "finetune", **{k: s[k] for k in ("stages", "head", "lr", "base_lr_factor",
                                                           "optimizer", "regularizer", "seed", "train_dir")}}
    model = GraftModel.from_backbone(source, new_head, train.classes, preprocessing=preprocessing,
                                     training=training, features=features)

    extra = _conservation(s["regularizer"], s["regularizer_weight"], source, features, new_head)
    generator = torch.Generator().manual_seed(s["seed"])
    train_data = ImageDataset(train, preprocessing, s["augment"])
    if distributed:  # each process trains on its own 1/world_size of every epoch
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(train_data, shuffle=True, seed=s["seed"], drop_last=True)
        train_loader = DataLoader(train_data, batch_size=s["batch_size"], sampler=sampler, drop_last=True)
    else:
        train_loader = DataLoader(train_data, batch_size=s["batch_size"], shuffle=True, generator=generator,
                                  drop_last=len(train) > s["batch_size"])
    val_loader = DataLoader(ImageDataset(val, preprocessing, False), batch_size=s["batch_size"])
    loop = LoopSettings(stages=plan, lr=s["lr"], base_lr_factor=s["base_lr_factor"], optimizer=s["optimizer"],
                        weight_decay=s["weight_decay"], patience=s["patience"], freeze_first=s["freeze_first"],
                        progress=progress, distributed=distributed,
                        # frozen layers see the same inputs every epoch only without augmentation;
                        # LwF needs the images themselves
                        reuse_frozen_prefix=not s["augment"] and s["regularizer"] != "lwf")
    result = run_stages(model, features.trunk, new_head, train_loader, val_loader, loop,
                        run.path / "checkpoints", run.path / "history.jsonl", extra,
                        generator=generator, resume=resume)
    model.training_info.update({"best_epoch": result.best_epoch, "epochs_run": len(result.history)})
    model.eval()
    if not is_main_process():  # rank 0 writes the model and reports
        return FitResult(run.path, {})
    model.save(run.model_dir)
    _, _, y_true, y_pred = evaluate_loader(model, val_loader)
    metrics = run.write_evaluation(y_true, y_pred, train.classes, {
        "n_train": len(train), "n_val": len(val), "seconds": round(time.perf_counter() - start, 3),
        "best_epoch": result.best_epoch, "resumed_from_epoch": resume["epoch"] if resume else None,
        "skipped": skipped_train + skipped_val,
    }, title=f"{Path(s['train_dir']).name} (fine-tuned)")
    _curves_png(result.history, run.path / "curves.png")
    run.write_config({"command": "finetune", "settings": settings, "classes": train.classes,
                      "backbone_weights": source.weights_source, "image_size": preprocessing.size})
    return FitResult(run.path, metrics)


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
    raise GraftError(f"unknown regularizer {kind!r}: use l2sp or lwf")


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
