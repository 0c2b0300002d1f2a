"""graft audit on file names that are not UTF-8 (a Latin-1 name from an old camera or a
Windows share): audit.csv holds the name's own bytes, the page is drawn from it again, and
`graft fit --exclude` leaves that very file out. --val or --test naming DATA is refused."""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys

from conftest import SHARED_DATASETS, copy_subset, needs_shared
from graft.data.decisions import read_decisions
from graft.recipes.audit import audit
from graft.reporting.audit_page import rewrite_audit_page


@needs_shared
def test_a_latin1_file_name_round_trips_through_audit_csv_and_exclude(tmp_path):
    train = copy_subset(SHARED_DATASETS / "hymenoptera" / "train", tmp_path / "train", 3)
    original = sorted((train / "ants").iterdir())[0]
    copy = train / "ants" / os.fsdecode(b"lat\xe9.jpg")  # lone surrogate in Python (PEP 383)
    shutil.copyfile(original, copy)  # a byte copy: an exact-duplicate row names it
    result = audit(str(train), tmp_path / "run", progress=False)
    with open(result.run_dir / "audit.csv", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        rows = list(csv.DictReader(handle))
    named = {row["path"] for row in rows} | {row["other_path"] for row in rows}
    assert str(copy) in named, rows
    assert os.path.realpath(copy) in read_decisions(result.run_dir / "audit.csv").exclude
    rewrite_audit_page(result.run_dir)  # `graft report RUN` reads audit.csv back
    assert "lat" in (result.run_dir / "report.html").read_text(errors="replace")


@needs_shared
def test_val_or_test_naming_data_itself_is_one_line_and_nothing_written(tmp_path):
    train = copy_subset(SHARED_DATASETS / "hymenoptera" / "train", tmp_path / "train", 2)
    (tmp_path / "link").symlink_to(train)
    for extra in (["--val", str(tmp_path / "link")], ["--val", str(train), "--test", str(train)]):
        done = subprocess.run([sys.executable, "-m", "graft", "audit", str(train), *extra, "-o", str(tmp_path / "run")],
                              capture_output=True, text=True)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "is the DATA folder" in done.stderr, done.stderr
        assert not (tmp_path / "run").exists()


def test_an_exclude_csv_saved_by_excel_with_a_bom_is_read(tmp_path):
    edited = tmp_path / "edited.csv"  # Excel's "CSV UTF-8": a byte-order mark and CRLF line ends
    edited.write_bytes(b"\xef\xbb\xbfpath,relabel\r\n/data/bees/1.jpg,ants\r\n/data/ants/2.jpg,\r\n")
    decisions = read_decisions(edited)
    assert decisions.relabel == {os.path.realpath("/data/bees/1.jpg"): "ants"}
    assert decisions.exclude == {os.path.realpath("/data/ants/2.jpg")}
