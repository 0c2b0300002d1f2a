"""graft report RUN on a graft select run leaves select's contact sheet alone, with one line
(it drew an empty validation page over it: "macro F1 0.000", no rows, no pictures)."""
from __future__ import annotations

import subprocess
import sys

from conftest import needs_shared
from graft.recipes.select import select


@needs_shared
def test_graft_report_on_a_select_run_keeps_its_page(hymenoptera_small, tmp_path):
    train, _ = hymenoptera_small
    run = select(str(train), tmp_path / "pick", n=3, progress=False).run_dir
    before = (run / "report.html").read_bytes()
    done = subprocess.run([sys.executable, "-m", "graft", "report", str(run)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "graft select run's report.html" in done.stderr
    assert (run / "report.html").read_bytes() == before
