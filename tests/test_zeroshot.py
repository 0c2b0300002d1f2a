"""graft zeroshot: ants and bees told apart with no training image; a name ImageNet does not
cover is refused in one line with nothing written; the model is an ordinary run folder."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import SHARED_DATASETS, needs_shared
from graft.artifacts.model import GraftModel
from graft.recipes.zeroshot import zeroshot


@needs_shared
def test_ants_and_bees_without_training_images(tmp_path):
    result = zeroshot("ants,bees", tmp_path / "run", progress=False)
    assert result.metrics["classes"]["bees"]["wnid"] == "n02206856"
    val = SHARED_DATASETS / "hymenoptera" / "val"
    paths = sorted((val / "ants").iterdir())[:4] + sorted((val / "bees").iterdir())[:4]
    model = GraftModel.load(result.run_dir)
    _, probabilities = model.predict_paths(paths)
    assert model.classes == ["ants", "bees"]
    assert (probabilities.argmax(1) == np.array([0] * 4 + [1] * 4)).mean() >= 7 / 8
    assert np.allclose(probabilities.sum(1), 1, atol=1e-5)


def test_an_uncovered_name_is_refused_in_one_line_before_writing(tmp_path):
    done = subprocess.run([sys.executable, "-m", "graft", "zeroshot", "--classes", "bee,sunflower", "-o",
                           str(tmp_path / "run")], capture_output=True, text=True)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len([line for line in lines if line.startswith("sunflower:")]) == 1
    assert not any(line.startswith("bee:") for line in lines)
    assert not (tmp_path / "run").exists()


def test_an_ambiguous_name_lists_its_senses_and_a_sense_can_be_chosen():
    from graft.curation.wordnet import resolve
    from graft.errors import GraftError

    with pytest.raises(GraftError) as refused:
        resolve("cat,dog")
    line = next(line for line in str(refused.value).splitlines() if line.startswith("cat:"))
    assert "cat=n02121620" in line and "cat=n02127808" in line  # domestic cat, big cat
    chosen = resolve("cat=n02121620,dogs")  # a plural is read as its noun
    assert [c.wnid for c in chosen] == ["n02121620", "n02084071"]
    assert len(chosen[1].imagenet) == 118  # ImageNet-1k's dog breeds


def test_report_on_a_zeroshot_run_says_what_scores_it(tmp_path):
    """A zeroshot run holds a model and no evaluation: `graft report` says to run `graft evaluate`
    (before: "not a finished graft run"), in one line, exit 2."""
    from click.testing import CliRunner

    from graft.cli import main

    run = zeroshot("ant,bee", tmp_path / "run", progress=False).run_dir
    result = CliRunner().invoke(main, ["report", str(run)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and f"graft evaluate {run} LABELLED_DIR" in lines[0], result.output
    assert not (run / "report.html").exists()
