"""Run folders a user can trust: nothing overwritten by surprise, one process per folder,
resumes that match the run they continue, evaluation reports that do not collide, files with
the user's permissions, exports that stay out of the model folder."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from conftest import needs_shared
from graft.cli import main
from graft.errors import GraftError
from graft.recipes.frozen import evaluate, fit_frozen

FAST = dict(image_size=64, progress=False)


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def test_foreign_folder_is_refused_and_overwrite_keeps_the_users_files(digits_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "eval").mkdir()  # looks like graft's, and must go with --overwrite
    with pytest.raises(GraftError, match="not empty.*notes.txt.*--overwrite"):
        fit_frozen(digits_dir, out, **FAST)
    assert not (out / "model").exists()
    fit_frozen(digits_dir, out, overwrite=True, **FAST)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "model" / "graft.json").exists() and not (out / "eval").exists()


def test_a_second_fit_replaces_the_first_and_leaves_nothing_stale(digits_dir, tmp_path):
    out = tmp_path / "run"
    fit_frozen(digits_dir, out, **FAST)
    evaluate(out, digits_dir, progress=False)
    assert (out / "eval" / digits_dir.name / "metrics.json").exists()
    fit_frozen(digits_dir, out, head="prototype", **FAST)
    assert not (out / "eval").exists(), "an evaluation of the replaced model must not survive"
    assert json.loads((out / "metrics.json").read_text())["head"] == "prototype"


def test_another_commands_run_is_refused(digits_dir, tmp_path):
    out = tmp_path / "run"
    fit_frozen(digits_dir, out, **FAST)
    code, output = _cli("lr-find", digits_dir, "-o", out, "--image-size", 64, "--steps", 5, "-q")
    assert code == 2 and "holds a graft fit run" in output


def test_finetune_over_checkpoints_says_resume_or_overwrite(digits_dir, tmp_path):
    from graft.recipes.finetune import finetune

    out = tmp_path / "ft"
    finetune(digits_dir, out, stages="head:1", image_size=64, progress=False)
    code, output = _cli("finetune", digits_dir, "-o", out, "--stages", "head:1", "--image-size", 64, "-q")
    assert code == 2 and "finished" in output and "--overwrite" in output and "--resume" not in output
    (out / "metrics.json").unlink()  # as a killed run leaves it: checkpoints, no metrics
    code, output = _cli("finetune", digits_dir, "-o", out, "--stages", "head:1", "--image-size", 64, "-q")
    assert code == 2 and "--resume" in output and "--overwrite" in output
    code, output = _cli("finetune", digits_dir, "-o", out, "--stages", "head:1", "--image-size", 64, "-q",
                        "--overwrite")
    assert code == 0, output


def test_unwritable_output_is_one_line(digits_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, output = _cli("fit", digits_dir, "-o", blocker / "run", "--image-size", 64, "-q")
    assert code == 2 and "cannot create run folder" in output and "Traceback" not in output


@contextlib.contextmanager
def _another_process_holding(out):
    """A real second process holding RUN/.graft.lock until the block ends (then SIGKILL, as a crash)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from graft.artifacts.run_folder import RunLock; "
         f"RunLock({str(out)!r}, 'fit').acquire(); print('locked', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_second_process_is_refused_and_a_killed_ones_lock_is_taken_over(digits_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with _another_process_holding(out) as holder:
        with pytest.raises(GraftError, match=f"in use by another graft process: pid {holder.pid}"):
            fit_frozen(digits_dir, out, **FAST)
    with pytest.warns(UserWarning, match=f"taking over the lock of process {holder.pid}"):
        fit_frozen(digits_dir, out, **FAST)
    assert (out / ".graft.lock").read_text() == "", "an orderly finish releases the lock"


def test_a_refused_second_process_removes_nothing(digits_dir, tmp_path):
    """It once cleared the run's config.yaml and data.json before finding the folder locked, so the
    first run could not be resumed after a kill. The lock is now taken before anything is touched."""
    out = tmp_path / "run"
    fit_frozen(digits_dir, out, **FAST)
    before = sorted(p.name for p in out.iterdir())
    with _another_process_holding(out):
        for overwrite in (False, True):
            with pytest.raises(GraftError, match="in use by another graft process"):
                fit_frozen(digits_dir, out, overwrite=overwrite, **FAST)
        assert sorted(p.name for p in out.iterdir()) == before
        assert (out / "config.yaml").is_file() and (out / "model" / "graft.json").is_file()


def test_any_training_run_with_checkpoints_is_not_wiped_by_a_new_run(digits_dir, tmp_path):
    """Only finetune used to refuse; a new pretrain (adapt, distill, multitask) run silently wiped them."""
    from graft.recipes.pretrain import pretrain

    out = tmp_path / "pre"
    pretrain(digits_dir, out, backbone="resnet10t", stages="all:1", image_size=32, batch_size=16, progress=False)
    (out / "metrics.json").unlink()  # as a killed run leaves it: checkpoints, no metrics
    last = (out / "checkpoints" / "last.pt").read_bytes()
    code, output = _cli("pretrain", digits_dir, "--arch", "resnet10t", "--stages", "all:1", "--image-size", 32,
                        "-o", out, "-q")
    assert code == 2 and "graft resume" in output and "--overwrite" in output
    assert (out / "checkpoints" / "last.pt").read_bytes() == last


def test_resume_rejects_changed_settings_and_changed_data(digits_dir, tmp_path):
    import shutil

    from graft.recipes.finetune import finetune

    data = tmp_path / "data"
    shutil.copytree(digits_dir, data)
    out = tmp_path / "ft"
    finetune(data, out, stages="head:2", image_size=64, progress=False)
    (out / "metrics.json").unlink()  # as if killed after the last checkpoint
    code, output = _cli("finetune", data, "--resume", out, "--lr", "0.5", "--seed", "3", "--image-size", 64)
    assert code == 2 and "lr 0.5 (the run has 0.001)" in output and "seed 3 (the run has 0)" in output
    code, output = _cli("finetune", tmp_path / "elsewhere", "--resume", out)
    assert code == 2 and "train_dir" in output
    # the data changes between the kill and the resume: a file gone, one added, a class added
    victim = sorted((data / "3").iterdir())[0]
    victim.unlink()
    shutil.copy(sorted((data / "4").iterdir())[0], data / "4" / "extra.png")
    shutil.copytree(data / "5", data / "five-again")
    code, output = _cli("finetune", data, "--resume", out)
    assert code == 2 and "the data changed" in output
    assert "class(es) added: five-again" in output and "file(s) gone" in output and "file(s) added" in output
    assert not (out / "metrics.json").exists(), "nothing may train on changed data"


def test_resume_of_a_finished_run_says_so(digits_dir, tmp_path):
    from graft.recipes.finetune import finetune
    from graft.recipes.resume import resume as resume_finetune

    out = tmp_path / "ft"
    finetune(digits_dir, out, stages="head:1", image_size=64, progress=False)
    with pytest.raises(GraftError, match="finished run"):
        resume_finetune(out, progress=False)


@needs_shared
def test_ctrl_c_before_the_first_epoch_does_not_suggest_a_resume(hymenoptera_small, tmp_path):
    train, val = hymenoptera_small
    out = tmp_path / "ft"
    env = {**os.environ, "GRAFT_CACHE_DIR": str(tmp_path / "cold-cache")}  # cold: seconds before epoch 1
    process = subprocess.Popen([sys.executable, "-m", "graft", "finetune", str(train), "--val", str(val), "-o",
                                str(out), "--image-size", "96", "--stages", "top1:1", "-q"],
                               stderr=subprocess.PIPE, text=True, env=env,
                               # a shell's background job inherits SIGINT ignored; the child must see it
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while not (out / "config.yaml").exists() and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert not (out / "checkpoints" / "last.pt").exists(), "the interrupt came too late to test this"
    # 130, or killed by SIGINT (a shell shows both as 130): CPython exits by SIGINT when the
    # interrupt landed inside an exec() (a dataclass or lazy import being built), even though
    # graft caught it and printed its hint
    assert process.returncode in (130, -signal.SIGINT)
    assert "nothing to resume" in err and "--resume" not in err
    assert "Traceback" not in err


def test_evaluating_two_folders_named_val_keeps_both_reports(digits_dir, tmp_path):
    import shutil

    run = tmp_path / "run"
    fit_frozen(digits_dir, run, **FAST)
    first, second = tmp_path / "a" / "val", tmp_path / "b" / "val"
    shutil.copytree(digits_dir, first)
    shutil.copytree(digits_dir, second)
    shutil.rmtree(second / "0")  # different contents, same folder name
    dir_a, metrics_a = evaluate(run, first, progress=False)
    dir_b, metrics_b = evaluate(run, second, progress=False)
    assert dir_a != dir_b and dir_a.parent == dir_b.parent == run / "eval"
    assert json.loads((dir_a / "metrics.json").read_text())["data_dir"] == str(first.resolve())
    assert json.loads((dir_b / "metrics.json").read_text())["data_dir"] == str(second.resolve())
    again, _ = evaluate(run, first, progress=False)
    assert again == dir_a, "re-evaluating a folder replaces its own report"


def test_files_are_written_with_the_process_umask(digits_dir, tmp_path):
    from graft.artifacts.export import export_and_verify
    from graft.recipes.finetune import finetune

    old = os.umask(0o022)
    try:
        run = tmp_path / "run"
        fit_frozen(digits_dir, run, **FAST)
        export_and_verify(run)
        ft = tmp_path / "ft"
        finetune(digits_dir, ft, stages="head:1", image_size=64, progress=False)
    finally:
        os.umask(old)
    written = [run / "metrics.json", run / "report.txt", run / "config.yaml", run / "model" / "graft.json",
               run / "model" / "weights.safetensors", run / "model.onnx", ft / "checkpoints" / "last.pt",
               ft / "data.json", ft / "history.jsonl"]
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in written}
    assert set(modes.values()) == {"0o644"}, modes


def test_export_stays_out_of_the_model_folder_and_never_clobbers(digits_dir, tmp_path):
    import onnx

    from graft.artifacts.export import export_and_verify

    run = tmp_path / "run"
    fit_frozen(digits_dir, run, **FAST)
    before = sorted(p.name for p in (run / "model").iterdir())
    with pytest.raises(GraftError, match="inside the model folder"):
        export_and_verify(run, run / "model" / "model.onnx")
    with pytest.raises(GraftError, match="inside the model folder"):
        export_and_verify(run / "model", run / "model" / "x.onnx")
    assert sorted(p.name for p in (run / "model").iterdir()) == before
    precious = tmp_path / "thesis.onnx"
    precious.write_text("not graft's")
    with pytest.raises(GraftError, match="not an earlier graft export"):
        export_and_verify(run, precious)
    assert precious.read_text() == "not graft's"
    path, _ = export_and_verify(run)
    path, _ = export_and_verify(run)  # an earlier export is replaced
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["graft.classes"]) == sorted(p.name for p in digits_dir.iterdir())
    assert json.loads(meta["graft.preprocessing"])["size"] == 64
    assert json.loads(meta["graft.input"])["type"] == "float"
