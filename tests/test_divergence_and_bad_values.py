"""A learning rate that blows training up ends in one line saying so (not a success with a
"validation accuracy"); settings no run can use are refused before the run folder is made."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from graft.cli import main


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def test_a_diverging_learning_rate_stops_the_run_and_says_so(digits_dir, tmp_path):
    run = tmp_path / "run"
    code, output = _cli("finetune", digits_dir, "--lr", "10", "--stages", "head:2", "--image-size", 64,
                        "--val-split", 0.3, "-o", run, "-q")
    assert code == 2, output
    assert "training diverged" in output and "--lr auto" in output and "validation: accuracy" not in output
    assert not (run / "model").exists() and not (run / "metrics.json").exists(), "no model is shipped as a success"
    assert not (run / "checkpoints" / "last.pt").exists(), "the diverged epoch is not saved to resume from"


def test_a_sound_learning_rate_is_not_called_diverged(digits_dir, tmp_path):
    code, output = _cli("finetune", digits_dir, "--lr", "0.01", "--stages", "head:2", "--image-size", 64,
                        "--val-split", 0.3, "-o", tmp_path / "run", "-q")
    assert code == 0 and "diverged" not in output, output


@pytest.mark.parametrize("args, says", [
    (["--freeze-first", "999"], "--freeze-first 999: the network has"),
    (["--freeze-first", "no.such"], "--freeze-first 'no.such'"),
    (["--stages", "top0:1"], "bad stage 'top0:1'"),
    (["--stages", "head:1,top99:1"], "top99: the backbone has only"),
    (["--lr", "0"], "--lr"),
    (["--lr", "-1e-3"], "--lr"),
    (["--base-lr-factor", "0"], "--base-lr-factor"),
])
def test_nonsense_finetune_values_are_refused_before_the_run_folder(digits_dir, tmp_path, args, says):
    code, output = _cli("finetune", digits_dir, *args, "--image-size", 64, "-o", tmp_path / "run", "-q")
    assert code == 2 and says in output, output
    errors = [line for line in output.splitlines() if line.lower().startswith("error")]
    assert len(errors) == 1 and says in errors[0] and "Traceback" not in output  # (click adds its usage line)
    assert not (tmp_path / "run").exists()


def test_negative_task_weights_and_a_top_stage_too_deep_are_refused_in_multitask(digits_dir, tmp_path):
    tasks = [f"a={digits_dir}", f"b={digits_dir}"]
    code, output = _cli("multitask", *tasks, "--task-weight", "a=-1", "-o", tmp_path / "run", "-q")
    assert code == 2 and "--task-weight" in output and ">= 0" in output, output
    code, output = _cli("multitask", *tasks, "--stages", "top99:1", "-o", tmp_path / "run", "-q")
    assert code == 2 and "top99" in output, output
    assert not (tmp_path / "run").exists()


def test_a_large_conservation_weight_is_not_called_diverged(digits_dir, tmp_path):
    """BSS at weight 100 adds ~3600 to the head stage's loss (a constant: the backbone is frozen
    there); the guard called that divergence. It judges the task loss, the term on its own."""
    run = tmp_path / "run"
    code, output = _cli("finetune", digits_dir, "--lr", "0.01", "--stages", "head:1", "--regularizer", "bss",
                        "--regularizer-weight", 100, "--image-size", 64, "--val-split", 0.3, "-o", run, "-q")
    assert code == 0 and "diverged" not in output, output
    import json

    row = json.loads((run / "history.jsonl").read_text().splitlines()[0])
    assert row["conservation_loss"] > 100 * row["val_loss"]  # the term dwarfs the task loss, as in the report
