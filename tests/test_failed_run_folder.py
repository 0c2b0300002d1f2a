"""A run that fails before writing anything leaves no empty folder it created behind, and
leaves a folder the user made as it was (issue 25 tester: `-n` above the readable images)."""
from __future__ import annotations

import shutil

from click.testing import CliRunner

from graft.cli import main


def _pool(digits_dir, tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    for i, path in enumerate(sorted((digits_dir / "3").iterdir())[:3]):
        shutil.copy(path, pool / f"{i}.png")
    (pool / "notes.png").write_text("not an image\n")  # listed, unreadable: 3 readable of 4
    return pool


def test_a_failed_select_removes_the_folder_it_created_and_keeps_the_users(digits_dir, tmp_path):
    pool = _pool(digits_dir, tmp_path)
    made = tmp_path / "new-run"
    result = CliRunner().invoke(main, ["select", str(pool), "-n", "4", "-o", str(made), "-q"])
    assert result.exit_code == 2 and "readable images" in result.output, result.output
    assert not made.exists()

    own = tmp_path / "mine"
    own.mkdir()
    result = CliRunner().invoke(main, ["select", str(pool), "-n", "4", "-o", str(own), "-q"])
    assert result.exit_code == 2, result.output
    assert own.is_dir()  # the user's folder stays

    done = CliRunner().invoke(main, ["select", str(pool), "-n", "2", "-o", str(made), "-q"])
    assert done.exit_code == 0, done.output
    assert (made / "config.yaml").is_file()  # a run that succeeds keeps its folder
