"""Issue 30, items 7 and 14: every option a training command accepts changes what it trains
(an option its method does not use is refused, not written to config.yaml and ignored), and
the model's graft.json says how it was made: the command, its method's settings, and the
epoch whose weights it holds.

Runs are tiny and real: scikit-learn's handwritten zeros and ones (12 and 4: unbalanced, so
class weights and the balanced sampler matter), a ResNet-10-T from random weights at 32 px,
one epoch. Each (command, option) pair is one run compared with the command's baseline run.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps

from graft.cli import main
from graft.errors import GraftError
from graft.recipes import settings as s

TINY = {"backbone": "resnet10t", "pretrained": False, "image_size": 32, "val_fraction": 0.25, "batch_size": 8}


@pytest.fixture(scope="module")
def zeros_and_ones(digits_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("zeros-and-ones")
    for label, count in (("0", 12), ("1", 4)):
        (root / label).mkdir()
        for path in sorted((digits_dir / label).glob("*.png"))[:count]:
            shutil.copy2(path, root / label / path.name)
    return root


@pytest.fixture(scope="module")
def inverted(zeros_and_ones, tmp_path_factory) -> Path:
    """Another domain: the same kind of digits, white on black turned black on white (other images)."""
    root = tmp_path_factory.mktemp("inverted")
    for path in sorted(zeros_and_ones.glob("*/*.png")):
        ImageOps.invert(Image.open(path).convert("L")).save(root / f"{path.parent.name}-{path.name}")
    return root


@pytest.fixture(scope="module")
def teacher(zeros_and_ones, tmp_path_factory) -> Path:
    from graft.recipes.pretrain import pretrain

    run = tmp_path_factory.mktemp("teacher") / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pretrain(str(zeros_and_ones), run, progress=False, stages="all:1",
                 **{k: v for k, v in TINY.items() if k != "pretrained"})
    return run


_RUNS: dict = {}


def _run(command: str, data: Path, teacher: Path, inverted: Path, scratch: Path, **changes) -> Path:
    """The run folder of ``command`` on ``data`` with TINY settings, stages all:1 and
    ``changes``, through its recipe function; each distinct run is made once per module."""
    from graft.recipes.registry import recipe

    settings = {**TINY, "stages": "all:1", **changes}
    settings = {k: (v.format(inverted=inverted) if isinstance(v, str) else v) for k, v in settings.items()}
    key = (command, tuple(sorted(settings.items())))
    if key in _RUNS:
        return _RUNS[key]
    out = scratch / f"run-{len(_RUNS)}"
    extra = {"distill": {"teacher": str(teacher)}, "adapt": {"target_dir": str(inverted)},
             "lr-find": {"steps": 5}}.get(command, {})
    if command == "lr-find":
        settings.pop("stages")
    if command == "pretrain":
        settings.pop("pretrained")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recipe(command).run(str(data), out, progress=False, **extra, **settings)
    _RUNS[key] = out
    return out


def _losses(run: Path) -> list[float]:
    """The train and validation losses of every epoch (lr-find: the loss of every sweep step)."""
    if (run / "lr_find.json").exists():
        return json.loads((run / "lr_find.json").read_text())["raw_losses"]
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    return [loss for row in rows for loss in (row["train_loss"], row["val_loss"])]


def _training(run: Path) -> dict:
    return json.loads((run / "model" / "graft.json").read_text())["training"]


@pytest.fixture(scope="module")
def runs(zeros_and_ones, inverted, teacher, tmp_path_factory):
    scratch = tmp_path_factory.mktemp("runs")
    return lambda command, **changes: _run(command, zeros_and_ones, teacher, inverted, scratch, **changes)


def test_graft_json_says_how_a_distilled_model_was_made(runs, inverted, teacher):
    training = _training(runs("distill", unlabelled_dir="{inverted}"))
    assert training["method"] == "distill"
    assert training["teacher"] == str(teacher.resolve()) and training["unlabelled_dir"] == str(inverted.resolve())
    assert (training["alpha"], training["temperature"], training["teacher_inputs"]) == (0.9, 4.0, "augmented")
    assert training["best_epoch"] == 1 and training["epoch_kept_by"] == "validation accuracy"


def test_graft_json_says_how_an_adapted_model_was_made_and_that_it_is_the_last_epoch(runs, inverted):
    run = runs("adapt", stages="all:2")
    training, metrics = _training(run), json.loads((run / "metrics.json").read_text())
    assert training["method"] == "adapt" and training["adversary"] == "dann"
    assert training["target_dir"] == str(inverted.resolve()) and training["adversary_weight"] == 0.3
    # the model holds the last epoch's weights, whatever validation said: that is the epoch named
    assert training["best_epoch"] == metrics["best_epoch"] == 2 and training["epoch_kept_by"] == "last epoch"


# (command, options changed, base settings): the options change the losses of a run with the
# base settings over that base's run (stages all:1, TINY, one epoch of two steps). The options
# a method reads (its loss, mixing, class weights, teacher, adversary) are checked one by one.
# SHARED ones are read by the path every recipe shares (recipes/_training.prepare builds the
# loaders, head and loop settings of finetune, pretrain, adapt, distill and lr-find alike; the
# Trainer runs them): one run per command with all of them changed shows the command passes
# them on (one by one they would cost a run each per command).
SHARED = {"lr": 0.01, "base_lr_factor": 0.5, "layer_decay": 0.5, "optimizer": "sgd", "weight_decay": 0.5,
          "schedule": "onecycle", "head": "mlp:16", "augment": "crop", "batch_size": 4, "seed": 1, "image_size": 64,
          "sampler": "balanced"}
LOSS_PAIRS = [
    *[("finetune", change, {}) for change in (
        {"class_weight": "balanced"}, {"sampler": "balanced"}, {"mixup": 0.4}, {"cutmix": 0.4},
        {"regularizer": "bss"}, SHARED)],
    ("finetune", {"regularizer_weight": 0.03}, {"regularizer": "bss"}),
    ("finetune", {"augment_head_stage": True}, {"stages": "head:1"}),
    # pretrain trains with finetune's method (recipes/_training.supervised_method): its options together
    ("pretrain", {"class_weight": "balanced", "mixup": 0.4, "cutmix": 0.4}, {"augment": "crop"}),
    ("pretrain", SHARED, {"augment": "crop"}),
    *[("distill", change, {}) for change in (
        {"class_weight": "balanced"}, {"mixup": 0.4}, {"cutmix": 0.4}, {"temperature": 2.0}, {"alpha": 0.2},
        {"teacher_inputs": "plain"}, {"unlabelled_dir": "{inverted}"}, SHARED)],
    *[("adapt", change, {}) for change in (
        {"adversary_weight": 1.0}, {"discriminator_width": 64}, {"adversary": "cdan"}, SHARED)],
    *[("lr-find", change, {}) for change in (
        {"class_weight": "balanced"}, {k: v for k, v in SHARED.items() if k not in ("schedule", "lr")})],
]
# Options whose effect is not on the losses of one epoch: what is read, scored, kept or written
# (each covered by its own tests), or the network and plan themselves.
OTHER_EFFECT = {"train_dir", "val_dir", "val_fraction", "test_dir", "final", "patience", "weights", "backbone",
                "stages", "freeze_first", "transfer_layers", "transfer_from", "freeze_transferred", "pretrained",
                "teacher", "target_dir", "target_val_dir", "stage", "start", "end", "steps",
                "exclude",  # exclude: tests/test_audit.py
                "unlabelled_dir", "objective",  # pretrain --unlabelled: tests/test_selftaught.py (distill: LOSS_PAIRS)
                "monitor", "mode"}  # which epoch is kept and when to stop: tests/test_monitor.py
# Read only where prepare() decides which stages are augmented (a head stage's plain or augmented
# images), for every recipe alike; its run is finetune's (another head-stage run per command costs).
ON_FINETUNE = {"augment_head_stage"}
CONFIGS = {c.COMMAND: c for c in (s.FinetuneConfig, s.PretrainConfig, s.DistillConfig, s.AdaptConfig, s.LRFindConfig)}


def _shown(config) -> set[str]:
    """The options the command shows (as graft.cli.options builds them)."""
    return {f.name for f in dataclasses.fields(config) if not f.metadata.get("hidden")
            and f.name not in config.CLI_HIDDEN + config.REFUSED}


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_every_option_a_training_command_shows_is_checked_or_refused(command):
    """A new option must be put in LOSS_PAIRS (a run shows it changes training) or OTHER_EFFECT."""
    config = CONFIGS[command]
    tested = {name for cmd, change, _ in LOSS_PAIRS if cmd == command for name in change}
    assert _shown(config) - tested - OTHER_EFFECT - ON_FINETUNE == set(), "options no test shows to change anything"
    assert not tested & set(config.REFUSED)


@pytest.mark.parametrize("command, change, base", LOSS_PAIRS,
                         ids=[f"{c}-{'+'.join(o) if len(o) < 5 else 'shared'}" for c, o, _ in LOSS_PAIRS])
def test_accepted_options_change_the_run(runs, command, change, base):
    assert _losses(runs(command, **{**base, **change})) != _losses(runs(command, **base)), \
        f"{command} with {change} changed nothing"


@pytest.mark.parametrize("command, option, value", [
    ("adapt", "class_weight", "balanced"), ("adapt", "mixup", 0.4), ("adapt", "cutmix", 0.4),
    ("adapt", "regularizer", "l2sp"), ("distill", "regularizer", "lwf"), ("distill", "regularizer_weight", 1.0),
    ("lr-find", "mixup", 0.4), ("lr-find", "patience", 2)])
def test_an_option_a_method_ignores_is_refused_in_one_line(zeros_and_ones, tmp_path, command, option, value):
    config, data, teacher = CONFIGS[command], str(zeros_and_ones), str(tmp_path / "teacher")
    required = {"train_dir": data, "teacher": teacher, "backbone": "resnet10t", "target_dir": data}
    names = {f.name for f in dataclasses.fields(config)}
    with pytest.raises(GraftError, match=f"{command} does not use {config.flag(option)}"):
        config(**{k: v for k, v in required.items() if k in names}, **{option: value})
    args = {"distill": [data, "--teacher", teacher, "--student", "resnet10t"],
            "adapt": ["--source", data, "--target", data], "lr-find": [data]}[command]
    result = CliRunner().invoke(main, [command, *args, config.flag(option), str(value), "-o", str(tmp_path / "run")])
    assert result.exit_code == 2 and "No such option" in result.output, result.output  # not offered at all
    assert not (tmp_path / "run").exists()
