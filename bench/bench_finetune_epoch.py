"""Fine-tuning with the base frozen: graft vs a plain timm training loop, in one process.

Run (from the repository root):

    .venv/bin/python bench/bench_finetune_epoch.py
    .venv/bin/python bench/bench_finetune_epoch.py --epochs 2 --limit-per-class 40   # quick

Both sides train a new linear head on tf_efficientnet_lite0 (the same offline weights) with
the whole base frozen, no augmentation, AdamW at 1e-3, batch 32, and evaluate on the
validation folder after every epoch:

(a) plain: timm model with ``reset_classifier``, base ``requires_grad=False``, timm's eval
    transform + PIL in a torch DataLoader, every epoch runs the whole network;
(b) graft: ``graft.recipes.finetune.finetune(..., stages="head:E", augment=False)`` with an empty
    feature cache: the frozen network runs once (ONNX Runtime, decoding in a second thread),
    each epoch trains the head on its outputs;
(c) the same again: the frozen network's outputs now come from graft's on-disk feature cache
    (as they do after a ``graft fit`` on the same images). Informative, not the ratio.

Prints the walls (whole training including data loading, excluding the model build) and the
ratio (b) / (a).

``--stage top2 --augment`` measures an augmented stage instead: the top 2 blocks (and
everything after them) train, images get random-resized crops (scale 0.35-1) + flips, and
(a) runs the whole network in torch every batch while (b) runs the frozen layers below the
top 2 blocks in ONNX Runtime and only the trainable rest in torch. (c) is skipped.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

DEFAULT_TRAIN = "/work/shared/datasets/hymenoptera/train"
DEFAULT_VAL = "/work/shared/datasets/hymenoptera/val"


def subset(root: Path, target: Path, limit: int | None) -> Path:
    if limit is None:
        return root
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        (target / class_dir.name).mkdir(parents=True, exist_ok=True)
        for image in sorted(class_dir.iterdir())[:limit]:
            shutil.copy2(image, target / class_dir.name / image.name)
    return target


def plain_timm(train_dir: Path, val_dir: Path, epochs: int, top2: bool = False,
               augment: bool = False) -> tuple[float, float]:
    import timm
    import timm.data
    import torch
    import torchvision.datasets as tvd
    from torch.nn import functional as F
    from torchvision import transforms

    import graft

    model = graft.create_backbone().model
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    model.reset_classifier(len(classes))
    trainable = ("classifier", "blocks.5.3.", "blocks.6.", "conv_head", "bn2") if top2 else ("classifier",)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(trainable))
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    train_transform = transform
    if augment:  # what graft's crop-flip does
        train_transform = transforms.Compose([
            transforms.RandomResizedCrop(224, scale=(0.35, 1.0)), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])
    start = time.perf_counter()
    train = torch.utils.data.DataLoader(tvd.ImageFolder(str(train_dir), transform=train_transform), batch_size=32,
                                        shuffle=True, generator=torch.Generator().manual_seed(0))
    val = torch.utils.data.DataLoader(tvd.ImageFolder(str(val_dir), transform=transform), batch_size=32)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    accuracy = 0.0
    for _ in range(epochs):
        model.train()
        for images, targets in train:
            loss = F.cross_entropy(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        correct = total = 0
        with torch.inference_mode():
            for images, targets in val:
                correct += int((model(images).argmax(1) == targets).sum())
                total += len(targets)
        accuracy = correct / total
    return time.perf_counter() - start, accuracy


def graft_finetune(train_dir: Path, val_dir: Path, epochs: int, out: Path, stage: str = "head",
                   augment: bool = False) -> tuple[float, float]:
    from graft.recipes.finetune import finetune

    start = time.perf_counter()
    result = finetune(train_dir, out, val_dir=val_dir, stages=f"{stage}:{epochs}",
                      augment="crop-flip" if augment else "none", progress=False)
    return time.perf_counter() - start, result.metrics["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", default=DEFAULT_TRAIN)
    parser.add_argument("--val", default=DEFAULT_VAL)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--limit-per-class", type=int, default=None)
    parser.add_argument("--stage", choices=["head", "top2"], default="head")
    parser.add_argument("--augment", action="store_true")
    args = parser.parse_args()
    if args.stage == "top2" or args.augment:
        return compare_stage(args)
    import graft

    graft.create_backbone()  # imports and weights read before any timing, for both sides
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        train = subset(Path(args.train), work / "train", args.limit_per_class)
        val = subset(Path(args.val), work / "val", args.limit_per_class)
        os.environ["GRAFT_CACHE_DIR"] = str(work / "cache")  # cold: nothing cached before (b)
        plain_s, plain_acc = plain_timm(train, val, args.epochs)
        graft_s, graft_acc = graft_finetune(train, val, args.epochs, work / "run")
        cached_s, cached_acc = graft_finetune(train, val, args.epochs, work / "run-again")
    print(f"head-only fine-tuning, base frozen, {args.epochs} epochs, no augmentation, lite0 224 px")
    print(f"{'run':40s} {'wall s':>8s} {'val acc':>8s}")
    print(f"{'(a) plain timm loop':40s} {plain_s:8.2f} {plain_acc:8.4f}")
    print(f"{'(b) graft finetune (frozen base run once)':40s} {graft_s:8.2f} {graft_acc:8.4f}")
    print(f"{'(c) graft again (feature cache)':40s} {cached_s:8.2f} {cached_acc:8.4f}")
    print(f"ratio graft / plain = {graft_s / plain_s:.3f}  (per epoch: {graft_s / args.epochs:.2f} s vs "
          f"{plain_s / args.epochs:.2f} s)")


def compare_stage(args) -> None:
    import graft

    graft.create_backbone()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        os.environ["GRAFT_CACHE_DIR"] = str(work / "cache")
        train = subset(Path(args.train), work / "train", args.limit_per_class)
        val = subset(Path(args.val), work / "val", args.limit_per_class)
        top2 = args.stage == "top2"
        plain_s, plain_acc = plain_timm(train, val, args.epochs, top2=top2, augment=args.augment)
        graft_s, graft_acc = graft_finetune(train, val, args.epochs, work / "run", stage=args.stage,
                                            augment=args.augment)
    what = "augmented" if args.augment else "no augmentation"
    print(f"stage {args.stage} ({what}), {args.epochs} epochs, lite0 224 px")
    print(f"{'run':40s} {'wall s':>8s} {'val acc':>8s}")
    print(f"{'(a) plain timm loop':40s} {plain_s:8.2f} {plain_acc:8.4f}")
    print(f"{'(b) graft finetune':40s} {graft_s:8.2f} {graft_acc:8.4f}")
    print(f"ratio graft / plain = {graft_s / plain_s:.3f}  (per epoch: {graft_s / args.epochs:.2f} s vs "
          f"{plain_s / args.epochs:.2f} s)")


if __name__ == "__main__":
    main()
