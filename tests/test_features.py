"""Feature extraction: engines agree, the cache hits and misses when it should, bad files."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from graft import FeatureExtractor, scan_folder
from graft.errors import DataError, GraftError, ImageDecodeError

SIZE = 96  # small images keep the suite fast; the maths does not depend on the size


@pytest.fixture(scope="module")
def extractor(lite0):
    return FeatureExtractor(lite0, image_size=SIZE).fit()


def test_onnx_and_torch_engines_agree(lite0, digits_dir):
    paths = scan_folder(digits_dir).paths[:20]
    onnx = FeatureExtractor(lite0, image_size=SIZE, engine="onnx", cache=False).fit()
    torch_ = FeatureExtractor(lite0, image_size=SIZE, engine="torch", cache=False).fit()
    a, b = onnx.extract(paths), torch_.extract(paths)
    assert onnx.engine_ == "onnx" and torch_.engine_ == "torch"
    assert a.vectors.shape == (20, 1280)
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-4)


def test_cache_hits_on_second_run_and_misses_on_changed_file(lite0, digits_dir, tmp_path):
    data = shutil.copytree(digits_dir, tmp_path / "d")
    paths = scan_folder(data).paths[:24]
    first = FeatureExtractor(lite0, image_size=SIZE).fit().extract(paths)
    assert first.cached == 0
    again = FeatureExtractor(lite0, image_size=SIZE).fit().extract(paths)
    assert again.cached == 24
    np.testing.assert_array_equal(first.vectors, again.vectors)

    os.utime(paths[0], ns=(1, 1))  # a changed file identity must be recomputed
    third = FeatureExtractor(lite0, image_size=SIZE).fit().extract(paths)
    assert third.cached == 23


def test_cache_key_depends_on_layer_and_preprocessing(lite0):
    keys = {
        FeatureExtractor(lite0, image_size=SIZE).fit().extractor_key_,
        FeatureExtractor(lite0, image_size=SIZE + 32).fit().extractor_key_,
        FeatureExtractor(lite0, image_size=SIZE, layer="blocks.4").fit().extractor_key_,
    }
    assert len(keys) == 3


def test_intermediate_layer_features_through_onnx(lite0, digits_dir):
    paths = scan_folder(digits_dir).paths[:8]
    inner = FeatureExtractor(lite0, layer="blocks.4", image_size=SIZE, cache=False).fit()
    out = inner.extract(paths)
    assert out.vectors.shape == (8, 112)
    reference = FeatureExtractor(lite0, layer="blocks.4", image_size=SIZE, cache=False, engine="torch").fit()
    np.testing.assert_allclose(out.vectors, reference.extract(paths).vectors, atol=1e-4)


def _with_bad_files(source, target):
    data = shutil.copytree(source, target)
    (data / "0" / "empty.png").write_bytes(b"")
    (data / "1" / "notes.jpg").write_text("not an image")
    good = next((data / "2").iterdir()).read_bytes()
    (data / "2" / "cut.png").write_bytes(good[: len(good) // 2])
    return data


def test_unreadable_images_are_skipped_and_named(extractor, digits_dir, tmp_path):
    data = _with_bad_files(digits_dir, tmp_path / "bad")
    folder = scan_folder(data)
    with pytest.warns(UserWarning, match="empty.png"):
        result = extractor.extract_folder(folder)
    reasons = {os.path.basename(s["path"]): s["reason"] for s in result.skipped}
    assert set(reasons) == {"empty.png", "notes.jpg", "cut.png"}
    assert "empty" in reasons["empty.png"] and "not an image" in reasons["notes.jpg"]
    assert len(result) == len(folder) - 3
    assert len(result.labels) == len(result) and set(result.labels) == set(range(10))


def test_known_bad_files_are_remembered_not_dropped(extractor, digits_dir, tmp_path):
    data = _with_bad_files(digits_dir, tmp_path / "bad")
    folder = scan_folder(data)
    first = extractor.extract_folder(folder)
    with pytest.warns(UserWarning, match="notes.jpg"):
        again = extractor.extract_folder(folder)  # every answer from the cache, failures too
    assert again.cached == len(folder) - 3
    assert again.skipped == first.skipped


def test_strict_mode_raises_on_first_bad_image(extractor, digits_dir, tmp_path):
    data = _with_bad_files(digits_dir, tmp_path / "bad")
    with pytest.raises(ImageDecodeError):
        extractor.extract_folder(scan_folder(data), strict=True)


def test_no_readable_image_is_an_error(extractor, tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"")
    with pytest.raises(DataError, match="none of the 1 images"):
        extractor.extract([bad])


def test_features_file_round_trip_without_pickle(extractor, digits_dir, tmp_path):
    result = extractor.extract_folder(scan_folder(digits_dir))
    path = result.save(tmp_path / "feats.npz")
    back = type(result).load(path)
    np.testing.assert_array_equal(back.vectors, result.vectors)
    np.testing.assert_array_equal(back.labels, result.labels)
    assert back.paths == result.paths and back.classes == result.classes


def test_feature_extractor_in_a_sklearn_pipeline(lite0, digits_dir):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folder = scan_folder(digits_dir)
    paths = [str(p) for p in folder.paths]
    pipe = make_pipeline(FeatureExtractor(lite0, image_size=SIZE), StandardScaler(), LogisticRegression(max_iter=500))
    pipe.fit(paths[::2], folder.labels[::2])
    accuracy = (pipe.predict(paths[1::2]) == folder.labels[1::2]).mean()
    assert accuracy > 0.6  # 10 classes, chance is 0.1: the features carry the digit


def test_extractor_raises_before_fit(lite0, digits_dir):
    """scikit-learn's rule: an unfitted extractor says so, it does not build a network on the quiet."""
    from sklearn.exceptions import NotFittedError

    unfitted = FeatureExtractor(lite0, image_size=SIZE)
    paths = scan_folder(digits_dir).paths[:2]
    for call in (lambda: unfitted.extract(paths), lambda: unfitted.transform(paths),
                 unfitted.get_feature_names_out, lambda: unfitted.engine_):
        with pytest.raises(NotFittedError, match=r"call \.fit\(\) first"):
            call()
    assert not hasattr(unfitted, "feature_net_")


def test_clone_of_an_extractor_over_a_built_network_rebuilds_that_network(lite0, digits_dir):
    """A fine-tuned model's extractor (from_network): clone() + fit must give its network back,
    not the ImageNet weights its architecture name would build."""
    import torch
    from sklearn.base import clone

    net = lite0.feature_net(None)
    with torch.no_grad():  # stands for fine-tuning: weights that differ from ImageNet's
        net.trunk.conv_stem.weight.mul_(1.5)
    tuned = FeatureExtractor.from_network(net, lite0.preprocessing.with_size(SIZE), lite0.architecture,
                                          engine="torch", cache=False)
    imagenet = FeatureExtractor(lite0, image_size=SIZE, engine="torch", cache=False).fit()
    assert tuned.extractor_key_ != imagenet.extractor_key_
    copy = clone(tuned)
    assert not hasattr(copy, "feature_net_")
    copy.fit()
    assert copy.extractor_key_ == tuned.extractor_key_
    paths = scan_folder(digits_dir).paths[:4]
    np.testing.assert_allclose(copy.extract(paths).vectors, tuned.extract(paths).vectors, atol=1e-6)
    with pytest.raises(GraftError, match="takes neither another layer"):
        clone(tuned).set_params(layer="blocks.4").fit()
