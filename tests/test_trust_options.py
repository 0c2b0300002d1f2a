"""Issue 30, settings and training correctness: numbers no run can use are refused in one line
before anything is written (NaN, infinities, absurd sizes, for every float setting of every
Config); a run whose training or validation loss explodes ends as an error with no model;
distill's default plan with a transfer set is the measured one."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from graft.cli import main
from graft.errors import GraftError
from graft.recipes import settings as s


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def _one_error_line(output: str) -> str:
    errors = [line for line in output.splitlines() if line.lower().startswith("error")]
    assert len(errors) == 1 and "Traceback" not in output, output
    return errors[0]


@pytest.mark.parametrize("lr", ["nan", "inf", "1e38", "-1"])
def test_a_learning_rate_no_run_can_use_is_one_line_and_writes_nothing(hymenoptera_small, tmp_path, lr):
    train, val = hymenoptera_small
    code, output = _cli("finetune", train, "--val", val, "--lr", lr, "--stages", "head:1", "--image-size", 64,
                        "-o", tmp_path / "run", "-q")
    assert code == 2 and "--lr" in _one_error_line(output), output
    assert not (tmp_path / "run").exists()


def test_a_model_whose_validation_loss_explodes_is_a_divergence_not_a_result(hymenoptera_small, tmp_path):
    """One step at LR 3 leaves a finite training loss (taken before the step) and a validation
    loss in the thousands: every prediction one class at probability 1. Not a success."""
    train, val = hymenoptera_small
    run = tmp_path / "run"
    code, output = _cli("finetune", train, "--val", val, "--lr", 3, "--stages", "head:1", "--image-size", 64,
                        "-o", run, "-q")
    line = _one_error_line(output)
    assert code == 2 and "training diverged: validation loss" in line and "--lr auto" in line, output
    assert not (run / "model").exists() and not (run / "metrics.json").exists()
    named = [Path(word.rstrip(".,;:")) for word in line.split() if word.rstrip(".,;:").endswith(".pt")]
    assert all(path.exists() for path in named), f"the message names a file that does not exist: {named}"


@pytest.mark.parametrize("command, args, flag", [
    ("distill", ["--teacher", "{train}", "--student", "tf_efficientnet_lite0", "--temperature", "nan"],
     "--temperature"),
    ("distill", ["--teacher", "{train}", "--student", "tf_efficientnet_lite0", "--alpha", "nan"], "--alpha"),
    ("auto", ["--budget", "nan"], "--budget"),
    ("auto", ["--budget", "inf"], "--budget"),
    ("finetune", ["--val-split", "nan"], "--val-split"),
    ("finetune", ["--mixup", "inf"], "--mixup"),
    ("adapt", ["--target", "{train}", "--adversary-weight", "nan"], "--adversary-weight"),
])
def test_nan_and_inf_are_refused_by_name_before_anything_is_written(hymenoptera_small, tmp_path, command, args,
                                                                    flag):
    train, _ = hymenoptera_small
    first = [] if command == "adapt" else [train]
    extra = ["--source", train] if command == "adapt" else []
    code, output = _cli(command, *first, *extra, *[a.format(train=train) for a in args], "-o", tmp_path / "run",
                        "-q")
    line = _one_error_line(output)
    assert code == 2 and flag in line and "learning rate" not in line, output  # (click says "range")
    assert not (tmp_path / "run").exists()


REQUIRED = {s.FinetuneConfig: {"train_dir": "d"}, s.PretrainConfig: {"train_dir": "d", "backbone": "resnet10t"},
            s.AdaptConfig: {"train_dir": "d", "target_dir": "t"},
            s.DistillConfig: {"train_dir": "d", "teacher": "t", "backbone": "b"},
            s.LRFindConfig: {"train_dir": "d"}, s.MultitaskConfig: {"tasks": {"a": "x", "b": "y"}},
            s.FrozenFitConfig: {"train_dir": "d"}, s.AdviseConfig: {"data": "d"}, s.FewshotConfig: {"data": "d"}}


def _float_fields(config):
    return [f for f in dataclasses.fields(config) if str(f.type).startswith("float")]


@pytest.mark.parametrize("config", list(REQUIRED), ids=lambda c: c.__name__)
def test_every_float_setting_has_bounds_and_refuses_nan_and_infinity(config):
    for f in _float_fields(config):
        assert f.metadata.get("high") is not None, f"{config.__name__}.{f.name} has no upper bound"
        for bad in (float("nan"), float("inf"), float("-inf"), 1e38):
            with pytest.raises(GraftError, match=config.flag(f.name)):
                config(**REQUIRED[config], **{f.name: bad})


def test_a_learning_rate_given_as_text_is_a_number_or_auto():
    with pytest.raises(GraftError, match="--lr must be a number or 'auto'"):
        s.FinetuneConfig(train_dir="d", lr="nan")
    assert s.FinetuneConfig(train_dir="d", lr="auto").lr == "auto"


def test_multitask_task_weights_refuse_nan_and_absurd_values():
    for bad in ("nan", "inf", "1e9"):
        with pytest.raises(GraftError, match="--task-weight"):
            s.MultitaskConfig(tasks={"a": "x", "b": "y"}, task_weights={"a": bad})


def test_distills_default_plan_is_head_20_with_a_transfer_set_and_unchanged_without():
    """BENCHMARKS.md (issue 18): with 10 labelled + 50 unlabelled flowers17 images per class,
    head:20 scored +7.1 points over the student alone; the old default head:5,top2:5 +1.8."""
    base = {"train_dir": "d", "teacher": "t", "backbone": "b"}
    assert s.DistillConfig(**base, unlabelled_dir="u").stages == "head:20"
    assert s.DistillConfig(**base).stages == "head:5,top2:5"
    assert s.DistillConfig(**base, unlabelled_dir="u", stages="head:2,top1:1").stages == "head:2,top1:1"


def test_distill_refuses_lr_auto_in_one_line_instead_of_a_traceback(hymenoptera_small, tmp_path):
    """The LR range test sweeps cross-entropy on labels; distill's batches carry (label, index)
    pairs and the teacher's term: it crashed in the sweep after the run folder was written."""
    train, _ = hymenoptera_small
    code, output = _cli("distill", train, "--teacher", train, "--student", "tf_efficientnet_lite0", "--lr", "auto",
                        "-o", tmp_path / "run", "-q")
    assert code == 2 and "graft lr-find" in _one_error_line(output), output
    assert not (tmp_path / "run").exists()
