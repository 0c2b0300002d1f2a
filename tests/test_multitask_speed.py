"""Multi-task at single-task speed (issue 18) and its run folder's names (issue 20, items 16
and 17): head stages train on each task's cached pooled features, frozen layers of augmented
stages run in ONNX Runtime, model.onnx names each task's columns, and task names that are run
folder entries are refused."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from graft.cli import main


@pytest.fixture(scope="module")
def trained(digits_dir, parity_dir, tmp_path_factory):
    """A multi-task run (head:3, then top1 with crop-flip) and how many images went through
    the network's first convolution in torch, over the whole run."""
    from graft.recipes.multitask import multitask

    stem_images = []

    def count(module, inputs, output):
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:  # only the stem reads RGB
            stem_images.append(inputs[0].shape[0])

    hook = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        run = tmp_path_factory.mktemp("mt") / "run"
        result = multitask({"digit": str(digits_dir), "parity": str(parity_dir)}, run, stages="head:3,top1:1",
                           image_size=64, batch_size=16, val_fraction=0.25, lr=3e-3, progress=False)
    finally:
        hook.remove()
    return run, result, int(sum(stem_images))


def test_head_stages_train_on_cached_features_and_never_run_the_trunk(trained):
    run, result, stem_images = trained
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    head_rows, top_rows = history[:3], history[3:]
    n_train = sum(task["n_train"] for task in result.metrics["tasks"].values())
    n_val = sum(task["n_val"] for task in result.metrics["tasks"].values())
    assert all(not row["augmented"] and row["frozen_engine"] in ("onnx", "cache") for row in head_rows)
    assert head_rows[0]["frozen_units_reused"] > 0 and head_rows[0]["frozen_encode_seconds"] > 0
    # the augmented top1 stage runs its frozen layers in ONNX Runtime, batch by batch
    assert top_rows[0]["augmented"] and top_rows[0]["frozen_units_onnx"] > 0
    assert top_rows[0]["frozen_engine"] == "onnx"
    # In torch the stem saw a few probe images and the final scoring of the validation images;
    # a single epoch of the trunk in torch alone would have shown it every training image.
    assert stem_images < n_train, (stem_images, n_train, n_val)
    assert stem_images <= n_val + 32
    assert result.metrics["tasks"]["digit"]["accuracy"] > 0.5 and result.metrics["tasks"]["parity"]["accuracy"] > 0.6


def test_batchnorm_statistics_stay_the_pretrained_ones_by_default(trained):
    """The top1 stage trained the shared trunk's last block, but (without --train-statistics)
    not its BatchNorm running statistics: the largest task's batches would have set them."""
    from graft.artifacts.model import GraftModel
    from graft.backbones import create_backbone
    from graft.defaults import DEFAULT_BACKBONE

    run, _, _ = trained
    saved = GraftModel.load(run).state_dict()
    fresh = create_backbone(DEFAULT_BACKBONE).model.state_dict()
    means = [key for key in fresh if key.endswith("running_mean")]
    deep = max(means, key=len)  # a path only one layer has: where the trunk sits in the saved model
    prefix = next(name for name in saved if name.endswith("." + deep))[:-len(deep)]
    moved = [key for key in means if not torch.equal(fresh[key], saved[prefix + key])]
    assert len(means) > 10 and not moved, moved


def test_model_onnx_names_each_tasks_columns(trained):
    import onnxruntime as ort

    run, _, _ = trained
    exported = CliRunner().invoke(main, ["export", str(run)])
    assert exported.exit_code == 0, exported.output
    session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    tasks = json.loads(session.get_modelmeta().custom_metadata_map["graft.tasks"])
    assert [(t["name"], t["start"], t["stop"]) for t in tasks] == [("digit", 0, 10), ("parity", 10, 12)]
    assert tasks[1]["classes"] == ["even", "odd"] and tasks[0]["classes"] == [str(d) for d in range(10)]
    # the metadata alone lets a user split the outputs: a softmax per task
    batch = np.random.default_rng(0).uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)
    _, probabilities, _ = session.run(None, {session.get_inputs()[0].name: batch})
    for task in tasks:
        np.testing.assert_allclose(probabilities[:, task["start"]:task["stop"]].sum(1), 1, rtol=1e-5)


@pytest.mark.parametrize("name", ["model", "checkpoints", "eval", "test", "Model"])
def test_task_names_that_are_run_folder_entries_are_refused(name, digits_dir, parity_dir, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["multitask", f"{name}={digits_dir}", f"parity={parity_dir}", "-o", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and repr(name) in lines[0], result.output
    assert not out.exists()
