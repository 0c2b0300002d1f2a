"""Self-taught learning (issue 28): `graft pretrain --unlabelled DIR` continues lite0 self-supervised
(SimSiam) on real MNIST-M digits, resumes exactly, and its run folder is a backbone for fit."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from conftest import SHARED_DATASETS
from graft.cli import main

MNISTM = SHARED_DATASETS / "digits" / "mnistm-2000"
pytestmark = pytest.mark.skipif(not MNISTM.is_dir(), reason=f"{MNISTM} not found (CI has it beside the clone)")
# small and fast: 64 px, the top four blocks, batches of 16, a quarter held out
FAST = ["--image-size", "64", "--stages", "top4:6", "--batch-size", "16", "--lr", "0.003", "--val-split", "0.25", "-q"]


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory):
    """120 real MNIST-M digits in a nested layout whose folder names mean nothing."""
    root = tmp_path_factory.mktemp("unlabelled")
    for digit in "0123":
        (root / f"batch-{digit}").mkdir()
        for path in sorted((MNISTM / digit).iterdir())[:30]:
            shutil.copy(path, root / f"batch-{digit}" / path.name)
    return root


def pretrain(unlabelled, out, *more):
    return CliRunner().invoke(main, ["pretrain", "--unlabelled", str(unlabelled), *FAST, "-o", str(out), *more])


def rows(run):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(unlabelled, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "straight"
    result = pretrain(unlabelled, run)
    assert result.exit_code == 0, result.output
    return run


def test_the_rotation_loss_falls_on_real_digits(straight):
    history = rows(straight)
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5, 6]
    assert all(row["method"] == "rotation" for row in history)
    assert history[-1]["val_loss"] < history[0]["val_loss"] - 0.1
    assert history[-1]["val_accuracy"] > 0.3  # four turns: chance is 0.25
    metrics = json.loads((straight / "metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_val"] == 120 and metrics["peak_rss_mib"] > 0
    assert metrics["objective"] == "rotation"


def test_the_simsiam_loss_falls_on_real_digits(unlabelled, tmp_path):
    result = pretrain(unlabelled, tmp_path / "simsiam", "--objective", "simsiam", "--stages", "top4:2")
    assert result.exit_code == 0, result.output
    history = rows(tmp_path / "simsiam")
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.05 and len(history) == 2
    assert all(row["method"] == "simsiam" and row["output_spread"] > 0.2 for row in history)  # no collapse
    # its head is the projector, not a classifier: predict refuses the run in one line
    # (evaluate named its 256 projection outputs z0..z255 as the classes DATA's folders were not)
    for command in (["predict", str(tmp_path / "simsiam"), str(next(unlabelled.rglob("*.png")))],
                    ["evaluate", str(tmp_path / "simsiam"), str(unlabelled)],
                    ["export", str(tmp_path / "simsiam"), "-o", str(tmp_path / "simsiam.onnx")]):
        refused = CliRunner().invoke(main, command)
        assert refused.exit_code != 0 and "simsiam-projector" in refused.output, command
        assert "use its run as a backbone" in refused.output and len(refused.output.strip().splitlines()) == 1


def test_the_run_is_a_backbone_for_fit(straight, tmp_path):
    from graft import create_backbone

    ours, source = create_backbone(str(straight)), create_backbone("tf_efficientnet_lite0")
    theirs = source.model.state_dict()
    changed = {k for k, v in ours.model.state_dict().items() if v.dtype.is_floating_point
               and not torch.equal(v, theirs[k])}
    assert any(k.startswith("blocks.6.") for k in changed)  # a trained block moved...
    assert not any(k.startswith("blocks.0.") or k.startswith("conv_stem") for k in changed)  # ...a frozen one did not
    assert ours.preprocessing.size == 64
    labelled = tmp_path / "labelled"
    for digit in "012":
        shutil.copytree(MNISTM / digit, labelled / digit, ignore=lambda d, names: sorted(names)[8:])
    result = CliRunner().invoke(main, ["fit", str(labelled), "--backbone", str(straight), "--val-split", "0.25",
                                       "-o", str(tmp_path / "fit"), "-q"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "fit" / "model" / "graft.json").read_text())
    assert saved["backbone"]["weights_source"].startswith("run:") and saved["preprocessing"]["size"] == 64
    # the advisor reads ImageNet similarity from its first backbone's ImageNet head, which a run lacks
    refused = CliRunner().invoke(main, ["advise", str(labelled), "--backbones", str(straight)])
    assert refused.exit_code != 0 and "put an ImageNet backbone first" in refused.output
    assert len(refused.output.strip().splitlines()) == 1


def test_a_killed_run_resumes_to_the_uninterrupted_one(unlabelled, straight, tmp_path):
    run = tmp_path / "killed"
    command = [sys.executable, "-m", "graft", "pretrain", "--unlabelled", str(unlabelled), *FAST, "-o", str(run)]
    proc = subprocess.Popen(command, env={**os.environ, "GRAFT_NO_PROGRESS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    history, deadline = run / "history.jsonl", time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (run / "metrics.json").exists()

    result = CliRunner().invoke(main, ["resume", str(run), "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "metrics.json").read_text())["resumed_from_epoch"] >= 1
    assert rows(run) == rows(straight)
    resumed, whole = load_file(str(run / "model" / "weights.safetensors")), \
        load_file(str(straight / "model" / "weights.safetensors"))
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)


def test_an_empty_or_missing_folder_is_one_line(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    for folder, said in ((tmp_path / "empty", "no images in"), (tmp_path / "gone", "does not exist")):
        result = pretrain(folder, tmp_path / "out")
        assert result.exit_code != 0 and said in result.output and len(result.output.strip().splitlines()) == 1
        assert not (tmp_path / "out").exists()
    result = CliRunner().invoke(main, ["pretrain", "--unlabelled", str(tmp_path), "--mixup", "0.2", "-o",
                                       str(tmp_path / "out")])
    assert result.exit_code != 0 and "--mixup" in result.output and "need labels" in result.output


def test_a_batch_of_one_image_is_refused_in_one_line(unlabelled, tmp_path):
    # SimSiam's predictor (BatchNorm1d) raised a ValueError traceback mid-run on batches of one
    for objective in ("simsiam", "rotation"):
        result = CliRunner().invoke(main, ["pretrain", "--unlabelled", str(unlabelled), "--objective", objective,
                                           "--batch-size", "1", "-o", str(tmp_path / "out")])
        assert result.exit_code != 0 and "--batch-size 1" in result.output and "at least 2" in result.output
        assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_a_held_out_file_that_does_not_decode_does_not_stop_the_run(tmp_path):
    # 8 files, one held out (seed 0's permutation puts position 2 first): when that one was broken,
    # the run refused 7 readable images with 'too few readable images to train and validate on'
    import numpy as np

    folder = tmp_path / "eight"
    folder.mkdir()
    for i, path in enumerate(sorted((MNISTM / "3").iterdir())[:8]):
        shutil.copy(path, folder / f"a{i}.png")
    (folder / f"a{np.random.default_rng(0).permutation(8)[0]}.png").write_text("not an image\n")
    result = CliRunner().invoke(main, ["pretrain", "--unlabelled", str(folder), "--stages", "top4:1",
                                       "--image-size", "32", "-q", "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "skipping" in result.output and "not an image" in result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["n_train"], metrics["n_val"]) == (6, 1) and len(metrics["skipped"]) == 1
