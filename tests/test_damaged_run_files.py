"""A run folder whose files were cut short or edited (a full disk, a partial copy, an editor) is
one clear error line naming the file, exit 2, never a traceback: for `graft report` (metrics.json,
predictions.csv, config.yaml, model/graft.json) and for `graft resume` (config.yaml, data.json,
history.jsonl, checkpoints/last.pt)."""
from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from graft.cli import main


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def _cut(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture(scope="module")
def finished_run(digits_dir, tmp_path_factory):
    """A real fine-tuning run on digits: two short epochs, checkpoints kept."""
    run = tmp_path_factory.mktemp("damaged") / "run"
    code, output = _cli("finetune", digits_dir, "-o", run, "--stages", "head:2", "--image-size", 64,
                        "--val-split", 0.3, "-q")
    assert code == 0, output
    return run


def _one_error_line(output: str, name: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert "Traceback" not in output and len(lines) == 1, output
    assert lines[0].startswith("error: ") and name in lines[0], output


@pytest.mark.parametrize("name", ["metrics.json", "predictions.csv", "config.yaml", "model/graft.json"])
def test_report_on_a_cut_file_is_one_line(finished_run, tmp_path, name):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    assert _cli("report", run)[0] == 0, "the intact copy reports"
    _cut(run / name)
    code, output = _cli("report", run)
    assert code == 2, output
    _one_error_line(output, name)


@pytest.mark.parametrize("name", ["config.yaml", "data.json", "history.jsonl", "checkpoints/last.pt"])
def test_resume_with_a_cut_file_is_one_line(finished_run, tmp_path, name):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "metrics.json").unlink()  # killed after its last checkpoint: resumable
    if name == "history.jsonl":  # an edited row (a cut last row is a kill while appending: dropped)
        rows = (run / name).read_text().splitlines()
        (run / name).write_text(rows[0][:20] + "\n" + rows[1] + "\n")
    else:
        _cut(run / name, keep=0.3)
    code, output = _cli("resume", run, "-q")
    assert code == 2, output
    _one_error_line(output, name)


def test_resume_with_a_config_cut_between_two_settings_is_one_line(finished_run, tmp_path):
    """A cut that ends at a line end still parses as YAML: what every run saves is then missing
    (CI once cut config.yaml there by chance, and resume died with a KeyError)."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "metrics.json").unlink()
    lines = (run / "config.yaml").read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if line.strip().startswith("augment:"))
    (run / "config.yaml").write_text("\n".join(lines[:cut]) + "\n")
    code, output = _cli("resume", run, "-q")
    assert code == 2, output
    _one_error_line(output, "config.yaml")
    (run / "config.yaml").write_text("\n".join(lines[:cut]) + "\n  augment: cr\n")  # a value cut short
    code, output = _cli("resume", run, "-q")
    assert code == 2, output
    _one_error_line(output, "config.yaml")


def test_a_cut_last_history_line_is_dropped_on_resume(finished_run, tmp_path):
    """A kill while history.jsonl gets its row loses that row, not the run."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "metrics.json").unlink()
    history = run / "history.jsonl"
    rows = history.read_text().splitlines()
    history.write_text(rows[0] + "\n" + rows[1][:10])
    code, output = _cli("resume", run, "-q")
    assert code == 0, output
    assert history.read_text().splitlines() == rows[:1] and (run / "metrics.json").is_file()
