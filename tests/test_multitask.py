"""Multi-task training: both tasks learned and predicted, the artifact round trip, gradients
from both losses into the shared trunk, resume after SIGKILL, bad input."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from graft.cli import main
from graft.errors import GraftError
from graft.recipes.multitask import parse_tasks

OPTIONS = ["--image-size", "64", "--batch-size", "16", "--val-split", "0.25", "--augment", "none", "-q"]


def test_two_tasks_train_predict_and_round_trip(digits_dir, parity_dir, tmp_path):
    from graft.artifacts.model import GraftModel

    run = tmp_path / "mt"
    result = CliRunner().invoke(main, ["multitask", f"digit={digits_dir}", f"parity={parity_dir}",
                                       "--stages", "head:4,top1:1", "--lr", "3e-3", "-o", str(run), *OPTIONS])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"digit", "parity"}
    assert metrics["tasks"]["digit"]["accuracy"] > 0.5 and metrics["tasks"]["parity"]["accuracy"] > 0.6
    for task in ("digit", "parity"):
        assert (run / task / "confusion_matrix.png").exists() and (run / task / "report.txt").exists()
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert {"digit_val_accuracy", "parity_val_accuracy"} <= set(history[-1])

    model = GraftModel.load(run)
    config = json.loads((run / "model" / "graft.json").read_text())
    assert [t["name"] for t in config["head"]["tasks"]] == ["digit", "parity"]
    assert config["head"]["tasks"][1]["classes"] == ["even", "odd"]
    images = sorted((digits_dir / "4").iterdir())[:3]
    _, probabilities = model.predict_paths(images, cache=False, progress=False)
    np.testing.assert_allclose(probabilities[:, model.head.slices["digit"]].sum(1), 1, rtol=1e-5)
    np.testing.assert_allclose(probabilities[:, model.head.slices["parity"]].sum(1), 1, rtol=1e-5)
    predicted = CliRunner().invoke(main, ["predict", str(run), *map(str, images), "--json", "-q"])
    assert predicted.exit_code == 0, predicted.output
    rows = [json.loads(line) for line in predicted.output.strip().splitlines()]
    assert all(set(row["tasks"]) == {"digit", "parity"} for row in rows)
    assert all(row["tasks"]["parity"][0]["class"] in ("even", "odd") for row in rows)

    # the ONNX export keeps one output and a softmax per task
    import onnxruntime as ort

    from graft.data.folders import load_image

    onnx_path = model.export_onnx(tmp_path / "mt.onnx")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batch = np.stack([model.preprocessing.to_array(load_image(p)) for p in images]).astype(np.float32)
    _, onnx_probabilities = session.run(None, {session.get_inputs()[0].name: batch})
    np.testing.assert_allclose(onnx_probabilities, probabilities, atol=1e-4)


def test_the_shared_trunk_gets_gradients_from_each_task():
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from graft.heads.modules import LinearHead, MultiTaskHead
    from graft.methods.multitask import MultiTask

    torch.manual_seed(0)
    trunk = nn.Linear(4, 6)
    head = MultiTaskHead([{"name": "a", "classes": ["x", "y"], "head": LinearHead(6, 2).config()},
                          {"name": "b", "classes": ["p", "q", "r"], "head": LinearHead(6, 3).config()}])
    model = nn.Sequential(trunk, head)
    loaders = {"a": DataLoader(TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,))), batch_size=4),
               "b": DataLoader(TensorDataset(torch.randn(12, 4), torch.randint(0, 3, (12,))), batch_size=4)}
    batch = next(MultiTask(loaders, {}, head.slices, sampling="together").batches(None, 0))
    grads = {}
    for only in ("a", "b"):
        method = MultiTask(loaders, {}, head.slices, weights={"a": float(only == "a"), "b": float(only == "b")},
                           sampling="together")
        model.zero_grad()
        method.training_step(model, batch, False).loss.backward()
        grads[only] = trunk.weight.grad.clone()
        assert grads[only].abs().sum() > 0
        other = "b" if only == "a" else "a"
        assert head.heads[other].fc.weight.grad.abs().sum() == 0  # the other task's head is untouched
    assert not torch.allclose(grads["a"], grads["b"])
    # together: every step draws from every task, the smaller task is cycled, not dropped
    assert MultiTask(loaders, {}, head.slices, sampling="together").steps_per_epoch(None) == 3
    # proportional: one task per step, every batch of every task once, spread evenly
    proportional = MultiTask(loaders, {}, head.slices)
    drawn = [list(step) for step in proportional.batches(None, 0)]
    assert proportional.steps_per_epoch(None) == 5 and drawn == [["b"], ["a"], ["b"], ["a"], ["b"]]


def test_multitask_resumes_after_sigkill_with_the_same_history(digits_dir, parity_dir, tmp_path):
    def command(run):
        return [sys.executable, "-m", "graft", "multitask", f"digit={digits_dir}", f"parity={parity_dir}",
                "--stages", "head:1,top1:3", "-o", str(run), *OPTIONS]

    env = {**os.environ, "GRAFT_NO_PROGRESS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = killed / "history.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    # the tasks and options repeated as typed (NAME=DIR lists, relative paths) are the saved ones
    repeated = ["multitask", "digit=" + os.path.relpath(digits_dir), f"parity={parity_dir}", *OPTIONS]
    changed = CliRunner().invoke(main, [*repeated, f"--val=digit={parity_dir}", "--resume", str(killed)])
    assert changed.exit_code == 2 and "val_dirs" in changed.output, changed.output
    resumed = CliRunner().invoke(main, [*repeated, "--resume", str(killed)])
    assert resumed.exit_code == 0, resumed.output
    straight = tmp_path / "straight"
    subprocess.run(command(straight), env=env, check=True, stdout=subprocess.DEVNULL)
    got = [json.loads(line) for line in history.read_text().splitlines()]
    want = [json.loads(line) for line in (straight / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in got] == [1, 2, 3, 4]
    for key in ("train_loss", "val_loss", "digit_val_accuracy", "parity_val_accuracy"):
        np.testing.assert_allclose([r[key] for r in got], [r[key] for r in want], rtol=1e-4, err_msg=key)


def test_bad_task_lists_are_refused(digits_dir, tmp_path):
    with pytest.raises(GraftError, match="task names clash"):
        parse_tasks([f"a={digits_dir}", f"a={tmp_path}"])
    with pytest.raises(GraftError, match="expected NAME=DIR"):
        parse_tasks([str(digits_dir)])
    result = CliRunner().invoke(main, ["multitask", f"a={digits_dir}", f"a={digits_dir}", "-o", str(tmp_path / "r")])
    assert result.exit_code != 0 and "task names clash" in result.output
    one = CliRunner().invoke(main, ["multitask", f"a={digits_dir}", "-o", str(tmp_path / "r")])
    assert one.exit_code != 0 and "at least two tasks" in one.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("frozen", [False, True])
def test_frozen_statistics_keep_the_shared_trunks_batchnorm_statistics(frozen):
    """--frozen-statistics: the trunk's BatchNorm layers train their weights but keep their
    running statistics through the engine's epochs (without it, they follow the batches)."""
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from graft.heads.modules import LinearHead, MultiTaskHead
    from graft.methods.multitask import MultiTask
    from graft.train.stages import parse_stages
    from graft.train.trainer import LoopSettings, Network, TrainData, Trainer

    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU())
    head = MultiTaskHead([{"name": "a", "classes": ["x", "y"], "head": LinearHead(6, 2).config()},
                          {"name": "b", "classes": ["p", "q", "r"], "head": LinearHead(6, 3).config()}])
    model = nn.Sequential(trunk, head)
    loaders = {"a": DataLoader(TensorDataset(3 + torch.randn(8, 4), torch.randint(0, 2, (8,))), batch_size=4),
               "b": DataLoader(TensorDataset(torch.randn(12, 4), torch.randint(0, 3, (12,))), batch_size=4)}
    norm = trunk[1]
    before = (norm.running_mean.clone(), norm.weight.detach().clone())
    method = MultiTask(loaders, loaders, head.slices, frozen_statistics=frozen)
    Trainer(LoopSettings(stages=parse_stages("all:2"), lr=1e-2, base_lr_factor=1.0, progress=False)).fit(
        method, Network(model, trunk, head), TrainData(loaders, loaders))
    assert torch.equal(norm.running_mean, before[0]) == frozen
    assert not torch.equal(norm.weight.detach(), before[1])  # the layer's weights train either way
