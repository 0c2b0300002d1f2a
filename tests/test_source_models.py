"""Your own source models: a run folder is a backbone, pretraining from random weights, and
layer transfer."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from graft.cli import main
from graft.errors import GraftError


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def source_run(digits_dir, tmp_path_factory):
    """A small network pretrained from random weights on real digits."""
    from graft.recipes.pretrain import pretrain

    out = tmp_path_factory.mktemp("pretrained") / "run"
    pretrain(digits_dir, out, backbone="resnet10t", stages="all:8", head="linear", batch_size=16,
             base_lr_factor=1.0, lr=2e-3, image_size=32, augment="none", progress=False)
    return out


def test_run_folder_is_a_backbone_with_the_saved_trunk(source_run, digits_dir, tmp_path):
    from graft.artifacts.model import GraftModel
    from graft.features.extractor import FeatureExtractor

    saved = GraftModel.load(source_run)
    paths = sorted((digits_dir / "4").iterdir())[:4]
    expected = saved.extractor(engine="torch", cache=False).extract(paths).vectors
    got = FeatureExtractor(str(source_run), engine="torch", cache=False).fit().extract(paths).vectors
    assert np.allclose(got, expected, atol=1e-5)
    code, output = _cli("layers", source_run, "--image-size", 32)
    assert code == 0 and "layer1" in output and "conv1" in output
    code, output = _cli("fit", digits_dir, "--backbone", source_run, "-o", tmp_path / "fit", "-q")
    assert code == 0, output
    model = json.loads((tmp_path / "fit" / "model" / "graft.json").read_text())
    assert model["backbone"]["weights_source"].startswith("run:")
    assert model["preprocessing"]["size"] == 32, "the run's own preprocessing comes with it"


def test_a_folder_that_is_not_a_run_and_a_tampered_run_are_one_line(source_run, digits_dir, tmp_path):
    code, output = _cli("layers", digits_dir)
    assert code == 2 and "not a graft run" in output
    tampered = tmp_path / "tampered"
    shutil.copytree(source_run, tampered)
    weights = tampered / "model" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])
    code, output = _cli("fit", digits_dir, "--backbone", tampered, "-o", tmp_path / "x", "-q")
    assert code == 2 and "not a readable safetensors file" in output and "Traceback" not in output
    config = json.loads((source_run / "model" / "graft.json").read_text())
    del config["preprocessing"]
    shutil.copytree(source_run, tmp_path / "nokey")
    (tmp_path / "nokey" / "model" / "graft.json").write_text(json.dumps(config))
    code, output = _cli("layers", tmp_path / "nokey")
    assert code == 2 and "missing key(s) preprocessing" in output


def test_pretrain_learns_from_random_weights_and_resumes(source_run):
    import yaml

    config = yaml.safe_load((source_run / "config.yaml").read_text())
    assert config["command"] == "pretrain" and config["settings"]["pretrained"] is False
    metrics = json.loads((source_run / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.3, "better than chance (0.1) on 10 classes after 8 short epochs"
    code, output = _cli("finetune", "x", "--resume", source_run)
    assert code == 2 and ("finished run" in output or "train_dir" in output)


def test_transfer_copies_exactly_the_chosen_layers(source_run):
    from graft.backbones import create_backbone, layer_units
    from graft.backbones.transfer import copy_layers, resolve_transfer

    donor = create_backbone(str(source_run))
    fresh = create_backbone("resnet10t", pretrained=False)
    units = resolve_transfer("first:3", fresh.model)
    assert units == [name for name, _ in layer_units(fresh.model)][:3]
    copy_layers(donor.model, fresh.model, units)
    mine, theirs = fresh.model.state_dict(), donor.model.state_dict()
    for key, tensor in mine.items():
        copied = any(key.startswith(u + ".") for u in units)
        if key not in theirs:  # the donor run dropped its classifier
            assert not copied
            continue
        if tensor.is_floating_point() and tensor.numel() > 1 and "running_var" not in key:
            assert torch.equal(tensor, theirs[key]) == copied, key
    assert resolve_transfer("last:2", fresh.model)[-1] == layer_units(fresh.model)[-1][0]
    assert resolve_transfer("layer1", fresh.model) == [u for u, _ in layer_units(fresh.model) if u.startswith("layer1")]
    with pytest.raises(GraftError, match="no layer 'layer9'"):
        resolve_transfer("layer9", fresh.model)


def test_frozen_transferred_layers_stay_equal_after_training(source_run, digits_dir, tmp_path):
    from graft.artifacts.model import GraftModel
    from graft.backbones import create_backbone
    from graft.recipes.finetune import finetune

    result = finetune(digits_dir, tmp_path / "ft", backbone="resnet10t", transfer_layers="first:4",
                      transfer_from=str(source_run), freeze_transferred=True, stages="all:1", image_size=32,
                      augment="none", progress=False)
    trained = GraftModel.load(result.run_dir).features.trunk.state_dict()
    donor = create_backbone(str(source_run)).model.state_dict()
    assert torch.equal(trained["conv1.0.weight"], donor["conv1.0.weight"]), "copied and frozen: unchanged"
    assert not torch.equal(trained["layer4.0.conv1.weight"], donor["layer4.0.conv1.weight"]), "not copied"
    code, output = _cli("layers", "resnet10t", "--weights", "nofile", "--transfer-layers", "first:2")
    assert code == 2
    code, output = _cli("layers", source_run, "--transfer-layers", "first:2", "--image-size", 32)
    assert code == 0 and output.count("copied") == 2
    code, output = _cli("finetune", digits_dir, "--backbone", "resnet10t", "--transfer-layers", "nosuch",
                        "--transfer-from", source_run, "-o", tmp_path / "bad", "--image-size", 32, "-q")
    assert code == 2 and "no layer 'nosuch'" in output
    assert not (tmp_path / "bad").exists(), "refused before the run folder is made"


def test_transfer_from_another_architecture_trains_the_backbone_or_is_refused(source_run, digits_dir, tmp_path):
    """--transfer-from names a resnet10t run: into a resnet14t (same stem shapes) the stem is
    copied and a resnet14t is trained and saved, as config.yaml says; into an EfficientNet the
    layers do not exist, and that is one line before anything is written."""
    import yaml

    from graft.artifacts.model import GraftModel
    from graft.backbones import create_backbone

    code, output = _cli("finetune", digits_dir, "--backbone", "resnet14t", "--transfer-layers", "first:6",
                        "--transfer-from", source_run, "--freeze-transferred", "--stages", "all:1", "--image-size", 32,
                        "--augment", "none", "-o", tmp_path / "ok", "-q")
    assert code == 0, output
    saved = GraftModel.load(tmp_path / "ok")
    config = yaml.safe_load((tmp_path / "ok" / "config.yaml").read_text())
    assert config["settings"]["backbone"] == "resnet14t" == saved.config()["backbone"]["architecture"]
    donor = create_backbone(str(source_run)).model.state_dict()
    assert torch.equal(saved.features.trunk.state_dict()["conv1.0.weight"], donor["conv1.0.weight"])
    code, output = _cli("finetune", digits_dir, "--backbone", "tf_efficientnet_lite0", "--transfer-layers", "first:2",
                        "--transfer-from", source_run, "-o", tmp_path / "no", "-q")
    assert code == 2 and "is a resnet10t" in output and "tf_efficientnet_lite0" in output, output
    assert len(output.strip().splitlines()) == 1 and not (tmp_path / "no").exists()


@pytest.mark.parametrize("command", ["pretrain", "distill"])
def test_ctrl_c_after_an_epoch_says_how_to_resume_and_the_command_resumes(command, source_run, digits_dir, tmp_path):
    """Every network-training command (adapt and multitask share the same command path) names
    `graft resume RUN` after Ctrl-C, and its own --resume continues the run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    args = ["--arch", "resnet10t"] if command == "pretrain" else ["--teacher", source_run, "--student", source_run,
                                                                  "--stages", "all:6"]
    args = [str(a) for a in args]
    process = subprocess.Popen([sys.executable, "-m", "graft", command, str(digits_dir), *args, "--image-size", "32",
                                "-o", str(out), "-q"] + (["--stages", "all:6"] if command == "pretrain" else []),
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "GRAFT_NO_PROGRESS": "1"},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None and not (
            (out / "history.jsonl").exists() and (out / "history.jsonl").read_text().count("\n") >= 1):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode in (130, -signal.SIGINT), err
    assert f"graft resume {out}" in err and "Traceback" not in err, err
    code, output = _cli(command, "--resume", out, "--stages", "all:6", "-q")
    assert code == 0, output
    assert (out / "metrics.json").is_file()
