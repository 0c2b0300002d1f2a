"""`graft predict` on a folder names every entry it cannot read, including ones that are not
regular files (a FIFO, a link to nothing): before, a folder's listing dropped them silently
while the same paths given one by one were reported (issue 30, tester)."""
from __future__ import annotations

import os
import shutil

import pytest
from click.testing import CliRunner

from graft.cli import main


@pytest.fixture(scope="module")
def digits_run(digits_dir, tmp_path_factory):
    from graft.recipes.frozen import fit_frozen

    return fit_frozen(digits_dir, tmp_path_factory.mktemp("entries") / "run", image_size=64, progress=False).run_dir


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo (POSIX)")
def test_a_fifo_and_a_dangling_link_in_a_folder_are_named_not_dropped(digits_run, digits_dir, tmp_path):
    folder = tmp_path / "inbox"
    folder.mkdir()
    shutil.copy(sorted((digits_dir / "3").iterdir())[0], folder / "three.png")
    os.mkfifo(folder / "pipe.png")  # opening it for reading would block: it must be refused, not read
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    result = CliRunner().invoke(main, ["predict", str(digits_run), str(folder), "--csv", "-q"])
    assert result.exit_code == 1, result.output  # something was skipped, something was read
    skipped = [line for line in result.stderr.splitlines() if line.startswith("warning: skipping ")]
    assert any(str(folder / "pipe.png") in line and "not a regular file" in line for line in skipped), result.stderr
    assert any(str(folder / "gone.png") in line for line in skipped), result.stderr
    assert "three.png" in result.stdout
