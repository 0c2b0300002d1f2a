"""Frozen extraction on Ray Data (issue 29): FeatureExtractor(processes="ray:2") runs the images
through 2 Ray actors (one ONNX Runtime session each) on a local Ray cluster and merges their
chunks into the same Features, in the same order, as extraction in this process; an unreadable
file is skipped by name, as there."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ray[data]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'ray[data]')")


def test_ray_workers_equal_one_process_and_skip_the_same_file(digits_dir, tmp_path):
    from graft.features.extractor import FeatureExtractor

    paths = sorted(digits_dir.glob("*/*.png"))[::3]  # 40 real digits, every class
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a PNG signature, then nothing decodable
    copy = shutil.copy(paths[0], tmp_path / "first.png")
    paths = [*paths, broken, copy]
    here = FeatureExtractor(image_size=64, cache=False, processes=0).fit()
    expected = here.extract(paths)
    try:
        with pytest.warns(UserWarning, match="broken.png"):
            got = FeatureExtractor(image_size=64, cache=False, processes="ray:2", batch_size=8).fit().extract(paths)
        assert ray.is_initialized()  # the actors ran on the local Ray cluster the extraction started
    finally:
        ray.shutdown()
    assert [str(p) for p in got.paths] == [str(p) for p in expected.paths]
    assert str(broken) not in [str(p) for p in got.paths] and len(got.paths) == len(paths) - 1
    assert got.vectors.shape == expected.vectors.shape and np.abs(got.vectors - expected.vectors).max() <= 1e-5
    np.testing.assert_array_equal(got.vectors[-1], got.vectors[0])  # the copy of the first digit
