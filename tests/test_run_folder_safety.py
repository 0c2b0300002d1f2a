"""--overwrite removes only what graft wrote (files a user put inside model/ or checkpoints/ make
it refuse, before anything is removed); a finished run given as -o is called finished, as
`graft resume` calls it; `graft auto` checks -o before its long analysis."""
from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from graft.cli import main


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def finished(digits_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("safety") / "run"
    code, output = _cli("finetune", digits_dir, "--stages", "head:1", "--image-size", 64, "-o", run, "-q")
    assert code == 0, output
    return run


def test_overwrite_refuses_to_remove_a_users_files_inside_graft_folders(finished, digits_dir, tmp_path):
    for inside in ("model", "checkpoints"):
        run = tmp_path / inside
        shutil.copytree(finished, run)
        (run / inside / "notes.txt").write_text("mine")
        before = sorted(p.relative_to(run) for p in run.rglob("*"))
        code, output = _cli("finetune", digits_dir, "--stages", "head:1", "--image-size", 64, "-o", run,
                            "--overwrite", "-q")
        assert code == 2 and f"{inside}/notes.txt" in output and "graft wrote" in output, output
        assert sorted(p.relative_to(run) for p in run.rglob("*")) == before, "nothing was removed"
    run = tmp_path / "beside"
    shutil.copytree(finished, run)
    (run / "notes.txt").write_text("mine")  # beside graft's outputs: kept, and the run goes on
    code, output = _cli("finetune", digits_dir, "--stages", "head:1", "--image-size", 64, "-o", run,
                        "--overwrite", "-q")
    assert code == 0 and (run / "notes.txt").read_text() == "mine", output


def test_a_finished_run_as_o_is_called_finished_like_resume_does(finished, digits_dir):
    code, output = _cli("finetune", digits_dir, "--stages", "head:1", "-o", finished, "-q")
    assert code == 2 and "finished finetune run" in output and "graft resume" not in output, output
    code, output = _cli("resume", finished)
    assert code == 2 and "finished run" in output


def test_auto_checks_its_output_folder_before_the_analysis(finished, digits_dir):
    code, output = _cli("auto", digits_dir, "-o", finished, "-q")
    assert code == 2 and "finished finetune run" in output, output
    assert "LogME" not in output and "auto:" not in output, "refused before any advice was measured"
