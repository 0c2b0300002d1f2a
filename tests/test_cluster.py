"""graft cluster on real images: clusters better than random assignment, scored against the
class folders it was not told about, a page and CSV with every image, --export class folders
that `graft fit` reads with the originals untouched, and bad input in one line, exit 2."""
from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import needs_shared
from graft.cli import main
from graft.clustering import ClusterHead, cluster_accuracy, cluster_scores, match_clusters
from graft.recipes.cluster import cluster
from graft.recipes.frozen import fit_frozen


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _fingerprint(root):
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_hungarian_accuracy_matches_clusters_to_classes():
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    clusters = np.array([2, 2, 1, 0, 0, 0, 1, 1])  # renamed, with one image in the wrong group
    assert match_clusters(labels, clusters) == {2: 0, 0: 1, 1: 2}
    assert cluster_accuracy(labels, clusters) == pytest.approx(7 / 8)
    assert cluster_scores(labels, labels)["nmi"] == 1.0


def test_cluster_head_is_a_scikit_learn_clusterer_that_finds_separated_groups():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 64)) * 3
    X = np.concatenate([c + rng.normal(size=(40, 64)) for c in centres]).astype(np.float32)
    y = np.repeat(np.arange(3), 40)
    head = ClusterHead(n_clusters=3, n_heads=4, epochs=30, dims=16).fit(X)
    assert head.probabilities_.shape == (120, 3) and len(head.head_losses_) == 4
    assert cluster_accuracy(y, head.labels_) > 0.95
    assert cluster_accuracy(y, head.predict(X)) > 0.95


@needs_shared
def test_cluster_beats_random_assignment_and_exports_folders_fit_reads(hymenoptera_small, tmp_path):
    train, _ = hymenoptera_small
    before = _fingerprint(train)
    result = cluster(str(train), tmp_path / "run", k=2, export=str(tmp_path / "export"), progress=False)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    # 20 photos, 10 ants and 10 bees; a random split into two groups scores ~0.6 on average
    assert metrics["accuracy"] >= 0.8 and metrics["nmi"] > 0.2 and "kmeans_accuracy" in metrics
    with open(result.run_dir / "clusters.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 20 and {r["cluster"] for r in rows} == {"0", "1"}
    assert {r["class"] for r in rows} == {"ants", "bees"} and all(0 < float(r["confidence"]) <= 1 for r in rows)
    page = (result.run_dir / "report.html").read_text()
    assert page.count("<figure") == 20 and "data:image/jpeg;base64," in page and "accuracy (Hungarian)" in page
    exported = sorted(p.name for p in (tmp_path / "export").iterdir())
    assert exported == ["cluster_0", "cluster_1"]
    assert sum(1 for _ in (tmp_path / "export").rglob("*.jp*g")) == 20
    fitted = fit_frozen(str(tmp_path / "export"), tmp_path / "fit", val_fraction=0.3, progress=False)
    assert fitted.metrics["n_train"] + fitted.metrics["n_val"] == 20
    assert _fingerprint(train) == before  # nothing moved, renamed or rewritten


def test_without_k_it_over_clusters_and_says_so(digits_dir, tmp_path):
    result = run("cluster", digits_dir, "-o", tmp_path / "run", "-q", "--heads", "3")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["over_clustered"] and metrics["k"] >= 2 and "over-clustered on purpose" in result.output


@pytest.mark.parametrize("args, says", [
    (("-k", "2"), "does not exist"),
    (("-k", "1"), "-k"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, digits_dir, args, says):
    data = tmp_path / "missing" if says == "does not exist" else digits_dir
    result = run("cluster", data, *args, "-o", tmp_path / "run", "-q")
    assert result.exit_code == 2 and says in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_more_clusters_than_images_and_a_used_export_folder_are_refused(digits_dir, tmp_path):
    result = run("cluster", digits_dir, "-k", "5000", "-o", tmp_path / "run", "-q")
    assert result.exit_code == 2 and result.output.startswith("error: -k 5000 is more clusters"), result.output
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "mine.txt").write_text("x")
    result = run("cluster", digits_dir, "-k", "3", "--export", tmp_path / "used", "-o", tmp_path / "run", "-q")
    assert result.exit_code == 2 and "--export" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("export", ["run", "run/exp", "."])
def test_an_export_folder_overlapping_the_run_folder_is_refused_before_writing(digits_dir, tmp_path, export):
    out = tmp_path / "run"
    result = run("cluster", digits_dir, "-k", "3", "-o", out, "--export", tmp_path / export, "-q")
    assert result.exit_code == 2 and "--export" in result.output and "overlap" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()
