"""The model artifact: save -> load gives the same predictions; ONNX export matches torch."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from graft import FeatureExtractor, GraftModel, fit_frozen, fit_head, load_train_val, scan_folder
from graft.errors import ModelError


@pytest.fixture(scope="module")
def fitted_run(digits_dir, tmp_path_factory):
    return fit_frozen(digits_dir, tmp_path_factory.mktemp("run"), val_fraction=0.25, image_size=96,
                      progress=False)


def test_fit_writes_the_run_folder(fitted_run):
    run = fitted_run.run_dir
    for name in ("config.yaml", "metrics.json", "report.txt", "confusion_matrix.png",
                 "model/graft.json", "model/weights.safetensors"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"accuracy", "macro_f1", "per_class", "n_train", "n_val", "seconds", "skipped"} <= set(metrics)
    assert metrics["n_train"] + metrics["n_val"] == 120 and metrics["n_val"] == 30
    assert set(metrics["per_class"]) == {str(d) for d in range(10)}
    assert metrics["accuracy"] > 0.5
    assert (run / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_second_fit_on_cached_features_needs_no_torch(digits_dir, fitted_run, tmp_path):
    """Another head on the same cached features: the network is neither built nor imported."""
    import subprocess
    import sys

    code = (
        "import sys, json\n"
        "from graft.recipes.frozen import fit_frozen\n"
        f"r = fit_frozen({str(digits_dir)!r}, {str(tmp_path / 'knn')!r}, val_fraction=0.25, "
        "image_size=96, head='knn', progress=False)\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'timm': 'timm' in sys.modules, "
        "'engine': r.metrics['engine'], 'cached': r.metrics['features_cached']}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"torch": False, "timm": False, "engine": "cache", "cached": 120}
    # and the model it wrote is complete: same backbone tensors, loads, predicts
    knn = GraftModel.load(tmp_path / "knn")
    assert knn.head.kind == "knn"
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        np.testing.assert_allclose(knn.features(x).numpy(), fitted_run.model.features(x).numpy(), atol=1e-6)


def test_linear_head_is_the_networks_new_final_layer(fitted_run):
    model = fitted_run.model
    assert isinstance(model.head.fc, torch.nn.Linear)
    assert model.head.fc.weight.shape == (10, 1280)
    config = json.loads((fitted_run.run_dir / "model" / "graft.json").read_text())
    assert config["head"]["kind"] == "linear" and config["layer"] is None
    assert config["backbone"]["name"] == "tf_efficientnet_lite0"
    assert config["preprocessing"]["size"] == 96


def _model_before_saving(lite0, digits_dir, head: str = "logreg", layer=None) -> GraftModel:
    """The model ``fit_frozen(digits_dir, val_fraction=0.25, image_size=96)`` saves, built in memory
    and never written: the same network, its head fitted on the same training features (the fit
    is deterministic). A round trip is compared with this, not with a second load of the files."""
    train, _ = load_train_val(digits_dir, val_fraction=0.25, seed=0)
    extractor = FeatureExtractor(lite0, layer=layer, image_size=96).fit()
    features = extractor.extract_folder(train, strict=True)
    fitted = fit_head(head, features.vectors, features.labels, len(train.classes))
    return GraftModel.from_backbone(lite0, fitted.module, train.classes, layer=layer,
                                    preprocessing=extractor.preprocessing_, features=extractor.feature_net_).eval()


def test_artifact_round_trip_same_predictions(fitted_run, digits_dir, lite0):
    paths = scan_folder(digits_dir).paths[::7]
    before_saving = _model_before_saving(lite0, digits_dir)
    loaded = GraftModel.load(fitted_run.run_dir)
    _, before = before_saving.predict_paths(paths, cache=False)
    _, after = loaded.predict_paths(paths, cache=False)
    np.testing.assert_allclose(after, before, atol=1e-5)
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        np.testing.assert_allclose(loaded(x).numpy(), before_saving(x).numpy(), atol=1e-5)


@pytest.mark.parametrize("head, layer", [("knn", None), ("rbf-svm", "blocks.5"), ("prototype", None)])
def test_non_linear_heads_and_inner_cuts_round_trip(digits_dir, tmp_path, lite0, head, layer):
    fit_frozen(digits_dir, tmp_path / "run", val_fraction=0.25, image_size=96, head=head, layer=layer,
               progress=False)
    before_saving = _model_before_saving(lite0, digits_dir, head, layer)
    loaded = GraftModel.load(tmp_path / "run")
    assert loaded.layer == layer
    x = torch.randn(3, 3, 96, 96)
    with torch.inference_mode():
        np.testing.assert_allclose(loaded(x).numpy(), before_saving(x).numpy(), atol=1e-4)


def test_onnx_export_matches_torch(fitted_run, tmp_path, digits_dir):
    import onnxruntime

    from graft.artifacts.export import export_and_verify
    from graft.data.folders import load_image

    path, max_diff = export_and_verify(fitted_run.run_dir, tmp_path / "m.onnx")
    assert max_diff <= 1e-4
    model = fitted_run.model
    images = np.stack([model.preprocessing.to_array(load_image(p)) for p in scan_folder(digits_dir).paths[::15]])
    logits, probabilities = onnxruntime.InferenceSession(str(path)).run(["logits", "probabilities"],
                                                                         {"images": images})
    with torch.inference_mode():
        expected = fitted_run.model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-5)


def test_loading_never_unpickles(fitted_run):
    """The artifact is JSON + safetensors; a pickle file next to it is never read."""
    names = sorted(p.name for p in (fitted_run.run_dir / "model").iterdir())
    assert names == ["graft.json", "novelty.safetensors", "weights.safetensors"]
    from safetensors import safe_open

    with safe_open(str(fitted_run.run_dir / "model" / "weights.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("backbone.") for k in keys) and "head.fc.weight" in keys


def test_loading_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(ModelError, match="is not a graft model"):
        GraftModel.load(tmp_path)
    (tmp_path / "graft.json").write_text("{not json")
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="not valid JSON"):
        GraftModel.load(tmp_path)
