"""``graft predict --ray 2`` and ``graft extract --ray 2`` (issue 29): a folder of real MNIST test
digits and a broken PNG, spread over 2 Ray actors on a local cluster, give the rows one process
gives, in the same order, with the same skipped file named on stderr and the same exit status.

One local Ray cluster serves the module (its start-up costs seconds): the first ``--ray`` command
starts it, as a user's would; the module's end shuts it down."""
from __future__ import annotations

import csv
import io
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SHARED_DATASETS, needs_shared
from graft.cli import main

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'graft-vision[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'graft-vision[ray]')")
pytestmark = needs_shared


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """40 MNIST test digits (4 per class, class folders) and, listed last, a file with a PNG
    signature and nothing else."""
    root = tmp_path_factory.mktemp("mnist40")
    for class_dir in sorted((SHARED_DATASETS / "digits" / "mnist-test").iterdir()):
        (root / class_dir.name).mkdir()
        for image in sorted(class_dir.iterdir())[:4]:
            shutil.copy2(image, root / class_dir.name / image.name)
    (root / "9" / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # listed last
    return root


@pytest.fixture(scope="module")
def run(digits_dir, tmp_path_factory):
    from graft.recipes.frozen import fit_frozen

    return fit_frozen(digits_dir, tmp_path_factory.mktemp("ray") / "run", image_size=64, progress=False).run_dir


@pytest.fixture(scope="module")
def local_cluster():
    assert not ray.is_initialized()
    yield
    ray.shutdown()


def _invoke(*args):
    return CliRunner().invoke(main, [*map(str, args), "-q"])  # click 8.2+: .stderr apart, .output both


def _actors(name: str) -> int:
    """How many actors of a class whose name holds ``name`` this Ray session made (Ray's GCS table)."""
    from ray._private.state import actors

    return sum(name in info["ActorClassName"] for info in actors().values())


def test_predict_on_two_ray_workers_writes_one_process_rows(run, folder, local_cluster):
    here = _invoke("predict", run, folder, "--csv", "-k", "3", "--batch-size", 8)
    spread = _invoke("predict", run, folder, "--csv", "-k", "3", "--batch-size", 8, "--ray", 2)
    assert ray.is_initialized() and ray.cluster_resources()["CPU"] == 2  # the local cluster --ray 2 started
    assert _actors("_PredictWorker") == 2
    assert here.exit_code == spread.exit_code == 1, spread.stderr  # 1: a file was skipped, the rest printed
    assert here.stderr.startswith(f"warning: skipping {folder / '9' / 'zz-broken.png'}: ") and len(
        here.stderr.splitlines()) == 1 and spread.stderr == here.stderr
    rows, got = list(csv.DictReader(io.StringIO(here.stdout))), list(csv.DictReader(io.StringIO(spread.stdout)))
    assert len(rows) == 40 * 3 and [(r["path"], r["rank"], r["class"]) for r in got] == \
        [(r["path"], r["rank"], r["class"]) for r in rows]
    for key in ("probability", "novelty"):
        assert np.abs(np.array([float(r[key]) for r in got]) - [float(r[key]) for r in rows]).max() <= 1e-5
    assert [r["unfamiliar"] for r in got] == [r["unfamiliar"] for r in rows]
    # the unreadable file comes last, so the actors ran the batches one process ran: every line equal
    assert spread.stdout == here.stdout


def test_extract_on_two_ray_workers_equals_one_process(folder, local_cluster, tmp_path):
    options = ["--image-size", 64, "--no-cache", "--batch-size", 8]
    here = _invoke("extract", folder, "-o", tmp_path / "here.npz", *options)
    spread = _invoke("extract", folder, "-o", tmp_path / "ray.npz", *options, "--ray", 2)
    assert here.exit_code == spread.exit_code == 0, spread.output
    assert _actors("_Worker") >= 2  # the feature network's actors (graft.features.ray_workers)
    assert "zz-broken.png" in here.stderr and spread.stderr == here.stderr
    a, b = np.load(tmp_path / "here.npz"), np.load(tmp_path / "ray.npz")
    assert len(a["paths"]) == 40 and list(b["paths"]) == list(a["paths"]) and list(b["labels"]) == list(a["labels"])
    assert np.abs(b["features"] - a["features"]).max() <= 1e-5


def test_ray_refuses_the_torch_engine(run, folder):
    result = _invoke("predict", run, folder, "--ray", 2, "--engine", "torch")
    assert result.exit_code == 2 and "--engine torch" in result.stderr
