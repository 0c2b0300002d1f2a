"""Fine-tuning end to end on real (tiny) data: stages run, the artifact is the same kind."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from graft import GraftModel
from graft.cli import main
from graft.recipes.finetune import finetune


def test_finetune_stages_history_and_artifact(digits_dir, tmp_path):
    result = finetune(digits_dir, tmp_path / "run", val_fraction=0.25, image_size=64, stages="head:4,top1:1",
                      head="mlp:32", lr=3e-3, progress=False)
    run = result.run_dir
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["stage"] for h in history] == ["head"] * 4 + ["top1"]
    assert history[0]["trainable_backbone_params"] == 0 < history[4]["trainable_backbone_params"]
    assert history[4]["lrs"][1] < history[4]["lrs"][0]  # base LR below the head's
    for name in ("metrics.json", "report.txt", "confusion_matrix.png", "curves.png", "config.yaml",
                 "checkpoints/best.pt", "checkpoints/last.pt", "model/graft.json"):
        assert (run / name).is_file(), name
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == result.metrics["best_epoch"]
    model = GraftModel.load(run)
    assert model.head.kind == "mlp" and model.config()["training"]["method"] == "finetune"
    x = torch.randn(2, 3, 64, 64)
    reference = GraftModel.load(run)
    with torch.inference_mode():
        np.testing.assert_allclose(model(x).numpy(), reference(x).numpy(), atol=1e-6)
    assert result.metrics["accuracy"] > 0.2  # 10 classes, 5 short epochs at 64 px: above chance


@pytest.mark.parametrize("regularizer", ["l2sp", "lwf", "bss"])
def test_conservation_regularizers_train(digits_dir, tmp_path, regularizer):
    result = finetune(digits_dir, tmp_path / regularizer, val_fraction=0.25, image_size=64, stages="top1:1",
                      regularizer=regularizer, progress=False)
    import yaml

    assert yaml.safe_load((result.run_dir / "config.yaml").read_text())["settings"]["regularizer"] == regularizer
    history = [json.loads(line) for line in (result.run_dir / "history.jsonl").read_text().splitlines()]
    assert len(history) == 1 and np.isfinite(history[0]["train_loss"])
    # The term is computed (logged, positive) and changes what is learned: the same run with the
    # term weighted 0 (same seed, same code path) ends with other weights.
    assert history[0]["conservation_loss"] > 0
    off = finetune(digits_dir, tmp_path / f"{regularizer}-off", val_fraction=0.25, image_size=64, stages="top1:1",
                   regularizer=regularizer, regularizer_weight=0.0, progress=False)
    with_term, without = GraftModel.load(result.run_dir).state_dict(), GraftModel.load(off.run_dir).state_dict()
    moved = max((with_term[key] - without[key]).abs().max().item() for key in with_term
                if with_term[key].is_floating_point())
    assert moved > 1e-4


def test_finetune_cli_and_predict(digits_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "ft"
    result = runner.invoke(main, ["finetune", str(digits_dir), "--val-split", "0.25", "--image-size", "64",
                                  "--stages", "head:1", "--freeze-first", "blocks.5.0", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    predicted = runner.invoke(main, ["predict", str(out), str(digits_dir / "3"), "--json", "-q"])
    assert predicted.exit_code == 0 and len(predicted.output.strip().splitlines()) == 12
    bad = runner.invoke(main, ["finetune", str(digits_dir), "--stages", "middle:2", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "bad stage" in bad.output


def test_resume_after_sigkill_continues_where_it_stopped(digits_dir, tmp_path):
    """A real training process is killed with SIGKILL mid-run, then resumed from its run folder."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "killed"
    command = [sys.executable, "-m", "graft", "finetune", str(digits_dir), "--val-split", "0.25",
               "--image-size", "64", "--batch-size", "8", "--stages", "head:2,top1:3", "-o", str(run), "-q"]
    env = {**os.environ, "GRAFT_NO_PROGRESS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = run / "history.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.5)  # into the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"

    checkpoint = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    lines_before = len(history.read_text().splitlines())
    assert checkpoint["epoch"] == lines_before >= 2  # every finished epoch was saved: at most one lost
    assert checkpoint["stage_index"] == (0 if checkpoint["epoch"] <= 2 else 1)  # stage of the last finished epoch

    result = CliRunner().invoke(main, ["finetune", str(digits_dir), "--resume", str(run), "-q"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in history.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["stage"] for r in rows] == ["head", "head", "top1", "top1", "top1"]
    assert [r["trainable_backbone_params"] > 0 for r in rows] == [False, False, True, True, True]
    assert json.loads((run / "metrics.json").read_text())["resumed_from_epoch"] == checkpoint["epoch"]

    # resuming reproduces the uninterrupted run: same losses epoch by epoch
    straight = finetune(digits_dir, tmp_path / "straight", val_fraction=0.25, image_size=64, batch_size=8,
                        stages="head:2,top1:3", progress=False)
    reference = [json.loads(line) for line in (straight.run_dir / "history.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([r["train_loss"] for r in rows], [r["train_loss"] for r in reference], rtol=1e-4)
    np.testing.assert_allclose([r["val_loss"] for r in rows], [r["val_loss"] for r in reference], rtol=1e-4)


def test_ddp_with_two_cpu_processes(digits_dir, tmp_path):
    """torchrun, 2 processes over gloo: each trains on half of every epoch, rank 0 writes."""
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:  # a free loopback port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    run = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", port,
               "-m", "graft", "finetune", str(digits_dir), "--val-split", "0.25", "--image-size", "64",
               "--batch-size", "8", "--stages", "head:1,top1:1", "-o", str(run), "-q"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["stage"], r["world_size"]) for r in rows] == [(1, "head", 2), (2, "top1", 2)]
    model = GraftModel.load(run)
    with torch.inference_mode():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    assert json.loads((run / "metrics.json").read_text())["n_val"] == 30


def test_frozen_prefix_is_reused_and_gives_the_same_training(digits_dir, tmp_path):
    """Without augmentation, frozen layers run once per stage; the losses are the same as
    running the whole network every epoch."""
    from graft.train import prefix as loop

    common = dict(val_fraction=0.25, image_size=64, batch_size=8, stages="head:2,top1:1", augment=False,
                  progress=False)
    fast = finetune(digits_dir, tmp_path / "fast", **common)
    rows = [json.loads(line) for line in (fast.run_dir / "history.jsonl").read_text().splitlines()]
    assert [r["frozen_units_reused"] > 0 for r in rows] == [True, True, True]
    assert rows[0]["frozen_units_reused"] > rows[2]["frozen_units_reused"]  # top1 reuses fewer units

    original = loop.cached_prefix_loaders
    loop.cached_prefix_loaders = lambda *args: None  # the plain path, for reference
    try:
        slow = finetune(digits_dir, tmp_path / "slow", **common)
    finally:
        loop.cached_prefix_loaders = original
    reference = [json.loads(line) for line in (slow.run_dir / "history.jsonl").read_text().splitlines()]
    assert [r["frozen_units_reused"] for r in reference] == [0, 0, 0]
    np.testing.assert_allclose([r["val_loss"] for r in rows], [r["val_loss"] for r in reference], rtol=1e-3)


def test_lr_sweep_restores_the_model_and_finds_a_working_lr(digits_dir, tmp_path):
    """The range test on real images: weights come back unchanged; its suggestion trains."""
    from graft.recipes.lr_find import find_lr

    sweep = find_lr(digits_dir, tmp_path / "sweep", val_fraction=0.25, image_size=64, steps=60, progress=False)
    assert len(sweep.lrs) >= 30 and sweep.lrs == sorted(sweep.lrs)
    assert 1e-6 <= sweep.suggestion <= sweep.min_loss_lr
    assert min(sweep.losses) < sweep.losses[0] * 0.8  # the loss did fall somewhere along the sweep
    for name in ("lr_find.png", "lr_find.json"):
        assert (tmp_path / "sweep" / name).stat().st_size > 0

    result = finetune(digits_dir, tmp_path / "auto", val_fraction=0.25, image_size=64, stages="head:3",
                      lr="auto", progress=False)
    import yaml

    settings = yaml.safe_load((result.run_dir / "config.yaml").read_text())["settings"]
    rows = [json.loads(line) for line in (result.run_dir / "history.jsonl").read_text().splitlines()]
    assert settings["lr"] == "auto" and rows[0]["lrs"][0] == pytest.approx(settings["lr_found"])
    assert (result.run_dir / "lr_find.png").is_file()
    assert result.metrics["accuracy"] > 0.3  # 10 classes: well above chance after 3 head epochs


def test_lr_find_cli(digits_dir, tmp_path):
    result = CliRunner().invoke(main, ["lr-find", str(digits_dir), "--image-size", "64", "--steps", "30",
                                       "-o", str(tmp_path / "lr"), "-q"])
    assert result.exit_code == 0, result.output
    assert "suggested lr" in result.output and (tmp_path / "lr" / "lr_find.png").is_file()
    bad = CliRunner().invoke(main, ["finetune", str(digits_dir), "--lr", "fast", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "neither a number nor 'auto'" in bad.output


def test_head_stage_on_plain_images_then_augmented_stages_with_mixing(digits_dir, tmp_path):
    """By default the head-only stage trains on plain images (frozen base run once); stages
    that train base layers get crops/flips, here with MixUp + CutMix and one-cycle."""
    result = finetune(digits_dir, tmp_path / "mixed", val_fraction=0.25, image_size=64, batch_size=8,
                      stages="head:1,top1:2", augment="randaugment", mixup=0.4, cutmix=1.0,
                      schedule="onecycle", layer_decay=0.8, progress=False)
    rows = [json.loads(line) for line in (result.run_dir / "history.jsonl").read_text().splitlines()]
    assert [r["augmented"] for r in rows] == [False, True, True]
    assert [r["mixed"] for r in rows] == [False, True, True]
    assert rows[0]["frozen_units_reused"] > 0 and rows[1]["frozen_units_reused"] == 0
    assert rows[1]["frozen_engine"] == "onnx" and rows[1]["frozen_units_onnx"] > 0
    assert all(np.isfinite(r["train_loss"]) for r in rows)
    assert len(rows[1]["lrs"]) > 2 and rows[1]["lrs"][2] < rows[1]["lrs"][1]  # layer-wise decay
    augmented = finetune(digits_dir, tmp_path / "aug-head", val_fraction=0.25, image_size=64, batch_size=8,
                         stages="head:1", augment_head_stage=True, progress=False)
    row = json.loads((augmented.run_dir / "history.jsonl").read_text().splitlines()[0])
    assert row["augmented"] and row["frozen_units_reused"] == 0


def test_frozen_layers_run_in_onnx_runtime_and_the_feature_cache(digits_dir, tmp_path, monkeypatch):
    """Frozen prefixes are encoded by ONNX Runtime (checked against torch); a wholly frozen
    base goes through graft's feature extractor, so a second run reads the feature cache."""
    from torch.utils.data import DataLoader

    from graft import create_backbone
    from graft.data.datasets import ImageDataset
    from graft.data.folders import scan_folder
    from graft.train.prefix import encode, onnx_runner

    backbone = create_backbone("tf_efficientnet_lite0")
    trunk = backbone.feature_net(None).trunk.eval()
    prefix = torch.nn.Sequential(trunk.conv_stem, trunk.bn1, trunk.blocks[0], trunk.blocks[1])
    images = ImageDataset(scan_folder(digits_dir), backbone.preprocessing.with_size(64), "none")
    loader = DataLoader(torch.utils.data.Subset(images, range(20)), batch_size=8)
    fast = encode(prefix, loader, runner=onnx_runner(prefix, next(iter(loader))[0]))
    plain = encode(prefix, loader)
    assert (fast.engine, plain.engine) == ("onnx", "torch")
    torch.testing.assert_close(fast.tensors[0], plain.tensors[0], atol=1e-4, rtol=1e-4)
    assert torch.equal(fast.tensors[1], plain.tensors[1])

    monkeypatch.setenv("GRAFT_CACHE_DIR", str(tmp_path / "cache"))  # empty: the first run computes
    common = dict(val_fraction=0.25, image_size=64, stages="head:2,top1:1", augment="none", progress=False)
    first = finetune(digits_dir, tmp_path / "first", **common)
    second = finetune(digits_dir, tmp_path / "second", **common)
    engines = [[json.loads(line)["frozen_engine"] for line in (run.run_dir / "history.jsonl").read_text().splitlines()]
               for run in (first, second)]
    # The first run's near-copy check (issue 25) extracts the pooled features in ONNX Runtime
    # before training and caches them, so its head stages already read them back: both runs
    # read the cache for the head stages, and the top1 stage encodes its prefix in ONNX Runtime.
    assert engines == [["cache", "cache", "onnx"], ["cache", "cache", "onnx"]]
    assert second.metrics["accuracy"] == first.metrics["accuracy"]


def test_augmented_stage_runs_frozen_layers_in_onnx_with_the_same_training(digits_dir, tmp_path):
    """Augmented stages run the frozen prefix in ONNX Runtime on every batch; the losses match
    the all-torch path (same augmentations: the random stream is the same)."""
    from graft.train import prefix as loop

    common = dict(val_fraction=0.25, image_size=64, batch_size=8, stages="top1:2", progress=False)
    fast = finetune(digits_dir, tmp_path / "onnx", **common)
    rows = [json.loads(line) for line in (fast.run_dir / "history.jsonl").read_text().splitlines()]
    assert [(r["augmented"], r["frozen_engine"]) for r in rows] == [(True, "onnx")] * 2
    original = loop.onnx_prefix_stage
    loop.onnx_prefix_stage = lambda *args: None  # the all-torch path, for reference
    try:
        slow = finetune(digits_dir, tmp_path / "torch", **common)
    finally:
        loop.onnx_prefix_stage = original
    reference = [json.loads(line) for line in (slow.run_dir / "history.jsonl").read_text().splitlines()]
    assert [r["frozen_engine"] for r in reference] == [None, None]
    np.testing.assert_allclose([r["train_loss"] for r in rows], [r["train_loss"] for r in reference], rtol=1e-3)
    np.testing.assert_allclose([r["val_loss"] for r in rows], [r["val_loss"] for r in reference], rtol=1e-3)
