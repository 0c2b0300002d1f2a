"""Cold extraction in worker processes gives the same vectors, failures and cache as in one."""
from __future__ import annotations

import numpy as np

from graft.features.extractor import FeatureExtractor
from graft.features.workers import MIN_IMAGES, process_count


def test_worker_processes_match_one_process(digits_dir, tmp_path):
    paths = sorted(digits_dir.rglob("*.png"))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    paths.insert(7, broken)
    one = FeatureExtractor(image_size=64, cache=False, processes=0).fit().extract(paths)
    many = FeatureExtractor(image_size=64, batch_size=16, processes=2).fit()
    found = many.extract(paths)
    assert found.paths == one.paths and np.array_equal(found.vectors, one.vectors)
    assert [s["path"] for s in found.skipped] == [str(broken)]
    again = many.extract(paths)  # the workers filled the cache, failures included
    assert again.cached == len(paths) - 1 and [s["path"] for s in again.skipped] == [str(broken)]
    flipped = FeatureExtractor(image_size=64, cache=False, processes=2, flip=True).fit().extract(paths[:20])
    mirrored = FeatureExtractor(image_size=64, cache=False, processes=0, flip=True).fit().extract(paths[:20])
    assert np.array_equal(flipped.vectors, mirrored.vectors)


def test_auto_uses_processes_only_for_enough_images(monkeypatch):
    assert process_count(MIN_IMAGES - 1, "auto") == 0
    assert process_count(5, 2) == 2 and process_count(5, 0) == 0
    monkeypatch.setenv("GRAFT_EXTRACT_PROCESSES", "0")
    assert process_count(10 * MIN_IMAGES, "auto") == 0
