"""config.yaml's settings version: a training run writes it, and an older run's settings are read
one way, upgraded a version at a time; a current file that lacks a setting is damaged, not old."""
from __future__ import annotations

import shutil

import pytest
import yaml
from click.testing import CliRunner

from graft.cli import main
from graft.errors import GraftError
from graft.recipes.settings.versions import SETTINGS_VERSION, read_settings, settings_record

# A fine-tuning run's settings as graft wrote them before sampler, augment_head_stage, exclude, ...
VERSION_1 = {"command": "finetune", "settings": {"train_dir": "/d", "backbone": "resnet10t", "stages": "head:1",
                                                 "augment": "crop-flip", "seed": 0, "lr": 0.001}}


def test_a_version_1_run_gets_what_runs_without_a_setting_did():
    read = read_settings(VERSION_1, "RUN/config.yaml")
    assert read["settings_version"] == SETTINGS_VERSION == 2
    settings = read["settings"]
    assert settings["sampler"] == "shuffle" and settings["schedule"] == "cosine" and settings["exclude"] is None
    assert settings["augment_head_stage"] is True  # older runs augmented every stage alike
    assert {k: settings[k] for k in VERSION_1["settings"]} == VERSION_1["settings"]  # nothing saved is changed
    plain = {**VERSION_1, "settings": {**VERSION_1["settings"], "augment": "none"}}
    assert read_settings(plain, "RUN/config.yaml")["settings"]["augment_head_stage"] is False


def test_the_current_version_is_read_as_written():
    record = settings_record("finetune", {"train_dir": "/d", "sampler": "balanced"}, classes=["a", "b"])
    assert read_settings(record, "RUN/config.yaml") == record  # no setting is filled in: a missing one is damage


def test_a_version_1_multitask_run_gets_the_optimizer_and_schedule_it_trained_with():
    multitask = {"command": "multitask", "settings": {"tasks": {"a": "/a"}, "lr": 0.01}}
    settings = read_settings(multitask, "RUN/config.yaml")["settings"]
    assert settings == {"tasks": {"a": "/a"}, "lr": 0.01, "optimizer": "adamw", "weight_decay": 1e-4,
                        "schedule": "cosine",  # and what the multitask code filled in itself before (s.get)
                        "augment_head_stage": True, "task_sampling": "together", "train_statistics": True}


@pytest.mark.parametrize("version", [SETTINGS_VERSION + 1, 0, "2", True])
def test_a_version_this_graft_does_not_know_is_one_error_naming_the_file(version):
    with pytest.raises(GraftError, match="RUN/config.yaml"):
        read_settings({**VERSION_1, "settings_version": version}, "RUN/config.yaml")


@pytest.fixture(scope="module")
def killed_run(digits_dir, tmp_path_factory):
    """A real fine-tuning run on digits, its metrics.json removed: killed after its last epoch."""
    run = tmp_path_factory.mktemp("versions") / "run"
    result = CliRunner().invoke(main, ["finetune", str(digits_dir), "-o", str(run), "--stages", "head:1",
                                       "--image-size", "64", "--val-split", "0.3", "-q"])
    assert result.exit_code == 0, result.output
    (run / "metrics.json").unlink()
    return run


def _rewritten(run, tmp_path, edit):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    edit(config)
    (copy / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return copy


def test_a_training_run_writes_its_settings_version(killed_run):
    assert yaml.safe_load((killed_run / "config.yaml").read_text())["settings_version"] == SETTINGS_VERSION


def test_an_older_run_resumes_and_a_current_one_lacking_a_setting_is_damaged(killed_run, tmp_path):
    def as_version_1(config):  # what graft wrote before the version and these settings existed
        del config["settings_version"]
        for name in ("sampler", "augment_head_stage", "exclude", "freeze_transferred"):
            del config["settings"][name]

    old = _rewritten(killed_run, tmp_path / "old", as_version_1)
    result = CliRunner().invoke(main, ["resume", str(old), "-q"])
    assert result.exit_code == 0, result.output
    assert (old / "metrics.json").is_file()
    assert yaml.safe_load((old / "config.yaml").read_text())["settings"]["sampler"] == "shuffle"

    cut = _rewritten(killed_run, tmp_path / "cut", lambda config: config["settings"].pop("sampler"))
    result = CliRunner().invoke(main, ["resume", str(cut), "-q"])
    assert result.exit_code == 2, result.output
    assert "config.yaml" in result.output and "sampler" in result.output, result.output


def test_multitask_trains_with_the_optimizer_its_config_saves(digits_dir, parity_dir, tmp_path):
    """Multitask's optimizer and schedule are its Config's (saved in config.yaml), not the loop's
    silent defaults: SGD and AdamW from the same start give other losses."""
    import json
    import warnings

    from graft.recipes.multitask import multitask
    from graft.recipes.settings import MultitaskConfig

    losses = {}
    for optimizer in ("adamw", "sgd"):
        config = MultitaskConfig(tasks={"digit": str(digits_dir), "parity": str(parity_dir)}, stages="head:1",
                                 image_size=64, batch_size=16, val_fraction=0.25, augment="none", optimizer=optimizer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = multitask(config, tmp_path / optimizer, progress=False).run_dir
        assert yaml.safe_load((run / "config.yaml").read_text())["settings"]["optimizer"] == optimizer
        losses[optimizer] = json.loads((run / "history.jsonl").read_text().splitlines()[0])["train_loss"]
    assert abs(losses["adamw"] - losses["sgd"]) > 1e-4, losses
