"""Caches that notice change and damage, model files that fail loudly, and guard rails on input."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import SHARED_DATASETS, copy_subset, needs_shared
from graft.cli import main
from graft.recipes.frozen import fit_frozen


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def digit_run(digits_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "run"
    fit_frozen(digits_dir, run, image_size=64, progress=False)
    return run


# ----------------------------------------------------------------------------- the feature cache
def _extractor():
    from graft.features.extractor import FeatureExtractor

    return FeatureExtractor(image_size=64).fit()


def test_cache_notices_new_content_with_the_same_size_and_mtime(tmp_path):
    path = tmp_path / "x.bmp"  # BMP: same dimensions, same file size, whatever the pixels
    Image.new("RGB", (64, 64), (250, 10, 10)).save(path)
    extractor = _extractor()
    first = extractor.extract([path]).vectors[0]
    stat = path.stat()
    Image.new("RGB", (64, 64), (10, 10, 250)).save(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as cp -p / touch -r would leave it
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    second = extractor.extract([path])
    assert second.cached == 0, "stale vector served for changed content"
    assert not np.allclose(first, second.vectors[0])


def test_damaged_cache_database_is_set_aside_and_rebuilt(tmp_path):
    from graft.features.cache import cache_root

    images = [tmp_path / f"{i}.png" for i in range(3)]
    for i, path in enumerate(images):
        Image.new("RGB", (40, 40), (80 * i, 20, 200)).save(path)
    extractor = _extractor()
    expected = extractor.extract(images).vectors
    database = cache_root() / "features" / f"{extractor.extractor_key_}.sqlite"
    database.write_bytes(database.read_bytes()[:1500])  # truncated mid-page
    with pytest.warns(UserWarning, match="damaged"):
        again = extractor.extract(images)
    assert again.cached == 0 and np.allclose(again.vectors, expected, atol=1e-5)
    assert database.with_name(database.name + ".corrupt").exists()
    assert extractor.extract(images).cached == 3, "the rebuilt cache works"
    database.write_bytes(os.urandom(4096))  # not a database at all
    with pytest.warns(UserWarning, match="damaged"):
        assert np.allclose(extractor.extract(images).vectors, expected, atol=1e-5)


def _read_only_folder(path: Path):
    """A folder this process cannot write: chmod for ordinary users, a read-only tmpfs for root."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        return lambda: path.chmod(0o755)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("running as root without permission to mount a read-only tmpfs: cannot make a read-only folder")
    return lambda: subprocess.run(["umount", str(path)], check=True)


def test_read_only_cache_warns_and_the_run_goes_on(digits_dir, tmp_path, monkeypatch):
    undo = _read_only_folder(tmp_path / "ro-cache")
    try:
        monkeypatch.setenv("GRAFT_CACHE_DIR", str(tmp_path / "ro-cache"))
        with pytest.warns(UserWarning, match="running without it"):
            result = fit_frozen(digits_dir, tmp_path / "run", image_size=64, progress=False)
        assert result.metrics["accuracy"] > 0.5 and result.metrics["engine"] == "onnx"
    finally:
        undo()


# ----------------------------------------------------------------------------- damaged artifacts
def _damage_weights_truncated(model):
    data = (model / "weights.safetensors").read_bytes()
    (model / "weights.safetensors").write_bytes(data[: len(data) // 2])


def _damage_weights_random(model):
    (model / "weights.safetensors").write_bytes(os.urandom(5000))


def _edit_config(change):
    def damage(model):
        config = json.loads((model / "graft.json").read_text())
        change(config)
        (model / "graft.json").write_text(json.dumps(config))
    return damage


@pytest.mark.parametrize("damage, message", [
    (_damage_weights_truncated, "not a readable safetensors file"),
    (_damage_weights_random, "not a readable safetensors file"),
    (_edit_config(lambda c: c.pop("classes")), "missing key(s) classes"),
    (_edit_config(lambda c: c.__setitem__("classes", "0123456789")), "'classes' must be a non-empty list"),
    (_edit_config(lambda c: c.__setitem__("classes", c["classes"][:-1])), "labels would not match scores"),
    (_edit_config(lambda c: c.__setitem__("format_version", 99)), "format version 99"),
    (_edit_config(lambda c: c["preprocessing"].pop("mean")), "preprocessing.mean"),
    (_edit_config(lambda c: c.__setitem__("layer", "blocks.5")), "does not match"),
], ids=["truncated", "random", "no-classes", "classes-string", "classes-short", "version", "no-mean", "layer"])
def test_damaged_artifact_is_one_line(digit_run, digits_dir, tmp_path, damage, message):
    run = tmp_path / "run"
    shutil.copytree(digit_run, run)
    damage(run / "model")
    code, output = _cli("predict", run, next((digits_dir / "0").iterdir()), "-q")
    assert code == 2 and message in output, output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1


def test_mismatched_weights_file_names_a_few_keys(tmp_path):
    import torch
    from safetensors.torch import save_file

    from graft.backbones import create_backbone

    state = create_backbone("tf_efficientnet_lite0").model.state_dict()
    state = {("renamed." + k if i % 2 else k): v.contiguous() for i, (k, v) in enumerate(state.items())}
    state["conv_stem.weight"] = torch.zeros(3, 3, 3, 3)
    save_file(state, str(tmp_path / "odd.safetensors"))
    code, output = _cli("layers", "tf_efficientnet_lite0", "--weights", tmp_path / "odd.safetensors")
    assert code == 2 and "missing" in output and "unexpected" in output and "conv_stem.weight" in output
    assert len(output) < 1200, f"{len(output)} characters"


def test_offline_hub_name_fails_at_once_in_one_line():
    from graft.backbones.timm_weights import hub_reachable

    if hub_reachable():
        pytest.skip("this machine resolves huggingface.co: the offline path cannot be exercised")
    code, output = _cli("layers", "resnet10t")
    assert code == 2 and "offline" in output and "--weights" in output and "Retrying" not in output


# ----------------------------------------------------------------------------- guard rails
def test_impossible_image_size_is_refused_before_any_work(digits_dir, tmp_path):
    code, output = _cli("fit", digits_dir, "-o", tmp_path / "run", "--image-size", 4000, "-q")
    assert code == 2 and "GiB" in output and "--image-size 4000" in output
    assert not (tmp_path / "run" / "model").exists()
    code, output = _cli("finetune", digits_dir, "-o", tmp_path / "ft", "--image-size", 4000, "-q")
    assert code == 2 and "GiB" in output


@pytest.mark.parametrize("args, message", [
    (["finetune", "{data}", "-o", "{out}", "--head", "mlp:0"], "mlp:HIDDEN"),
    (["finetune", "{data}", "-o", "{out}", "--head", "mlp:-3"], "mlp:HIDDEN"),
    (["finetune", "{data}", "-o", "{out}", "--base-lr-factor", "-0.1"], "--base-lr-factor"),
    (["finetune", "{data}", "-o", "{out}", "--regularizer-weight", "-1"], "--regularizer-weight"),
    (["finetune", "{data}", "-o", "{out}", "--mixup", "-1"], "--mixup"),
    (["fit", "{data}", "-o", "{out}", "--layer", ""], "--layer"),
    (["fit", "{data}", "-o", "{out}", "--layer", "   "], "--layer"),
    (["fit", "{data}", "-o", "{out}", "--head", "knn", "--class-weight", "balanced"], "does not apply"),
    (["predict", "{run}", "{data}", "--json", "--csv"], "choose one"),
    (["finetune", "{data}", "--resume", "{run}", "--overwrite"], "choose one"),
])
def test_senseless_values_are_usage_errors(digits_dir, digit_run, tmp_path, args, message):
    filled = [a.format(data=digits_dir, out=tmp_path / "out", run=digit_run) for a in args]
    code, output = _cli(*filled)
    assert code == 2 and message in output, output
    assert not (tmp_path / "out" / "model").exists()


def test_macosx_and_system_folders_are_not_classes(digits_dir, tmp_path):
    from graft.data.folders import scan_folder

    data = tmp_path / "data"
    shutil.copytree(digits_dir, data)
    for junk in ("__MACOSX", "$RECYCLE.BIN", "@eaDir"):
        (data / junk / "0").mkdir(parents=True)
        shutil.copy(next((data / "0").iterdir()), data / junk / "0" / "._x.png")
    (data / "3" / "Thumbs.db").write_bytes(b"\x00" * 64)
    folder = scan_folder(data)
    assert folder.classes == [str(d) for d in range(10)]
    assert not any(p.name == "Thumbs.db" for p in folder.paths)


def test_same_file_in_two_classes_or_in_train_and_val_is_warned(digits_dir, tmp_path):
    from graft.data.folders import load_train_val

    data = tmp_path / "data"
    shutil.copytree(digits_dir, data)
    (data / "7" / "copy-of-a-one.png").write_bytes(next((data / "1").iterdir()).read_bytes())
    os.symlink(next((data / "2").iterdir()), data / "8" / "link-to-a-two.png")
    with pytest.warns(UserWarning, match="2 file\\(s\\) are in more than one class folder"):
        load_train_val(data, val_fraction=0.25)
    train, val = tmp_path / "train", tmp_path / "val"
    shutil.copytree(digits_dir, train)
    shutil.copytree(digits_dir, val)
    with pytest.warns(UserWarning, match="validation image\\(s\\) are also in the training folder"):
        load_train_val(train, val_dir=val)


def test_missing_validation_class_is_warned_and_macro_f1_is_one_number(digits_dir, tmp_path):
    val = tmp_path / "val"
    shutil.copytree(digits_dir, val)
    shutil.rmtree(val / "9")
    with pytest.warns(UserWarning, match="'9' have no validation images"):
        result = fit_frozen(digits_dir, tmp_path / "run", val_dir=val, image_size=64, progress=False)
    macro = result.metrics["macro_f1"]
    report = (result.run_dir / "report.txt").read_text()
    macro_line = next(line for line in report.splitlines() if line.strip().startswith("macro avg"))
    assert f"{macro:.3f}" == macro_line.split()[4]
    assert "without any: 9" in report
    code, output = _cli("evaluate", result.run_dir, val, "-q")
    assert f"macro F1 {json.loads((result.run_dir / 'eval' / 'val' / 'metrics.json').read_text())['macro_f1']:.4f}" \
        in output


def test_class_weights_are_sklearns_balanced():
    from sklearn.utils.class_weight import compute_class_weight

    from graft.methods.supervised import balanced_class_weights

    labels = np.array([0] * 60 + [1] * 4 + [2] * 10)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    assert np.allclose(balanced_class_weights(labels, 3).numpy(), expected)
    absent = balanced_class_weights(np.array([0, 0, 2]), 3).numpy()  # a class with no images weighs 0
    present = compute_class_weight("balanced", classes=np.array([0, 2]), y=np.array([0, 0, 2]))
    assert absent[1] == 0 and np.allclose(absent[[0, 2]], present)


@pytest.fixture(scope="module")
def sixty_ants_four_bees(tmp_path_factory):
    if not (SHARED_DATASETS / "hymenoptera").is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATASETS}")
    root = tmp_path_factory.mktemp("imbalanced")
    copy_subset(SHARED_DATASETS / "hymenoptera" / "train", root / "train", 60)
    for extra in sorted((root / "train" / "bees").iterdir())[4:]:
        extra.unlink()
    return root / "train", SHARED_DATASETS / "hymenoptera" / "val"


@needs_shared
def test_imbalance_is_warned_and_balanced_weights_raise_minority_recall(sixty_ants_four_bees, tmp_path):
    train, val = sixty_ants_four_bees
    with pytest.warns(UserWarning, match="'ants' has 60 training images, 'bees' only 4"):
        plain = fit_frozen(train, tmp_path / "plain", val_dir=val, image_size=128, progress=False)
    balanced = fit_frozen(train, tmp_path / "balanced", val_dir=val, image_size=128, class_weight="balanced",
                          progress=False)
    recall = [run.metrics["per_class"]["bees"]["recall"] for run in (plain, balanced)]
    assert recall[1] > recall[0] + 0.1, recall
    prototype = fit_frozen(train, tmp_path / "prototype", val_dir=val, image_size=128, head="prototype",
                           class_weight="balanced", progress=False)
    assert prototype.metrics["per_class"]["bees"]["recall"] > 0.8


@needs_shared
def test_finetune_with_balanced_loss_and_sampler(sixty_ants_four_bees, tmp_path):
    import yaml

    from graft.recipes.finetune import finetune

    train, val = sixty_ants_four_bees
    result = finetune(train, tmp_path / "ft", val_fraction=0.2, stages="head:3,top1:1", image_size=64,
                      class_weight="balanced", sampler="balanced", progress=False)
    settings = yaml.safe_load((result.run_dir / "config.yaml").read_text())["settings"]
    assert settings["class_weight"] == "balanced" and settings["sampler"] == "balanced"
    history = [json.loads(line) for line in (result.run_dir / "history.jsonl").read_text().splitlines()]
    assert len(history) == 4 and all(np.isfinite(h["train_loss"]) for h in history)


@pytest.mark.parametrize("classes", [["蜜蜂 bee", "蚂蚁 ant", "ящерица"], ["\U00013000", "\U00013001", "b"]],
                         ids=["cjk", "no-font-has-it"])
def test_confusion_matrix_draws_every_name_or_numbers_them(tmp_path, classes):
    import warnings

    from graft.reporting.plots import confusion_matrix_png, fonts_for

    y = np.array([0, 1, 2, 0, 1, 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        confusion_matrix_png(y, np.roll(y, 1), classes, tmp_path / "cm.png", "".join(classes))
    missing = [str(w.message) for w in caught if "missing from" in str(w.message)]
    assert not missing, missing  # no name drawn as empty boxes
    assert Image.open(tmp_path / "cm.png").size[0] > 300
    if classes[0].startswith("蜜") and shutil.which("fc-list"):
        listed = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True).stdout
        if listed.strip():  # a CJK font is installed (make test installs one): it must be used
            assert fonts_for("".join(classes)) is not None
