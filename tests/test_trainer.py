"""The trainer and its callbacks on a small real problem: scikit-learn's handwritten digits
(8x8 images, 10 classes) and a small CNN, so every fit takes a second or two."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from graft.errors import GraftError
from graft.methods import Supervised
from graft.train import parse_stages
from graft.train.callbacks import Callback, FrozenPrefix, load_checkpoint, standard_callbacks
from graft.train.loaders import training_loader
from graft.train.trainer import LoopSettings, Network, TrainData, Trainer

ROW_KEYS = ["epoch", "stage", "augmented", "mixed", "lrs", "lrs_end", "train_loss", "train_accuracy", "val_loss",
            "val_accuracy", "trainable_backbone_params", "world_size", "frozen_units_reused", "frozen_units_onnx",
            "frozen_engine", "frozen_encode_seconds", "seconds", "train_class_counts"]


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    images = torch.tensor(x[:400], dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    labels = torch.tensor(y[:400])
    return TensorDataset(images[:300], labels[:300]), TensorDataset(images[300:], labels[300:])


def network(seed: int = 0) -> Network:
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten())
    head = nn.Sequential(nn.Dropout(0.2), nn.Linear(8 * 8 * 8, 10))  # dropout: the torch RNG matters on resume
    return Network(nn.Sequential(trunk, head), trunk, head)


def data(digits, seed: int = 0, batch_size: int = 32) -> TrainData:
    train, val = digits
    generator = torch.Generator().manual_seed(seed)
    return TrainData(training_loader(train, train.tensors[1], batch_size, generator=generator),
                     DataLoader(val, batch_size=100), generator=generator)


def without_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("seconds", "frozen_encode_seconds")} for row in rows]


def test_fit_keeps_the_best_epoch_and_writes_history_and_checkpoints(digits, tmp_path):
    net = network()
    settings = LoopSettings(parse_stages("all:4"), lr=3e-2, progress=False)
    result = Trainer(settings, standard_callbacks(tmp_path / "ck", tmp_path / "history.jsonl")).fit(
        Supervised(), net, data(digits))
    rows = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [list(row) for row in rows] == [ROW_KEYS] * 4 and without_times(rows) == without_times(result.history)
    assert result.best_accuracy == max(row["val_accuracy"] for row in rows) > 0.5  # 10 classes
    best = load_checkpoint(tmp_path / "ck" / "best.pt")
    assert best["epoch"] == result.best_epoch == 1 + int(np.argmax([row["val_accuracy"] for row in rows]))
    assert all(torch.equal(v, best["model"][k]) for k, v in net.model.state_dict().items())  # the best reloaded
    last = load_checkpoint(tmp_path / "ck" / "last.pt")
    assert (last["epoch"], last["stage_index"], last["epoch_in_stage"], last["stale"]) == \
        (4, 0, 4, 4 - result.best_epoch)

    kept = network()
    callbacks = standard_callbacks(tmp_path / "ck2", tmp_path / "h2.jsonl", keep_last=True)
    Trainer(settings, callbacks).fit(Supervised(), kept, data(digits))
    last = load_checkpoint(tmp_path / "ck2" / "last.pt")
    assert all(torch.equal(v, last["model"][k]) for k, v in kept.model.state_dict().items())


class Interrupt(Callback):
    """Stands for a kill after ``epochs`` epochs (after the checkpoint and the history line)."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_epoch_end(self, trainer, row: dict) -> None:
        if trainer.state.epoch == self.epochs:
            raise KeyboardInterrupt


@pytest.mark.parametrize("stopped_after", [1, 2])  # mid-stage, and right at the end of a stage
def test_an_interrupted_fit_resumes_to_the_same_history(digits, tmp_path, stopped_after):
    settings = LoopSettings(parse_stages("all:2,all:2"), lr=1e-2, schedule="onecycle", progress=False)
    straight = Trainer(settings, standard_callbacks(tmp_path / "a", tmp_path / "a.jsonl")).fit(
        Supervised(), network(), data(digits))

    history = tmp_path / "b.jsonl"
    with pytest.raises(KeyboardInterrupt):
        Trainer(settings, [*standard_callbacks(tmp_path / "b", history), Interrupt(stopped_after)]).fit(
            Supervised(), network(), data(digits))
    assert len(history.read_text().splitlines()) == stopped_after
    torch.manual_seed(123)  # the checkpoint brings back every random state
    resumed = Trainer(settings, standard_callbacks(tmp_path / "b", history)).fit(
        Supervised(), network(seed=7), data(digits, seed=7), resume=load_checkpoint(tmp_path / "b" / "last.pt"))
    rows = [json.loads(line) for line in history.read_text().splitlines()]
    assert without_times(rows) == without_times(resumed.history) == without_times(straight.history)
    assert resumed.best_epoch == straight.best_epoch


class ScriptedValidation(Supervised):
    """Supervised training whose validation accuracy per epoch is given (the selection rule's input)."""

    def __init__(self, accuracies):
        super().__init__()
        self.accuracies = iter(accuracies)

    def evaluate(self, evaluated, val_loader):
        loss, _, logs = super().evaluate(evaluated, val_loader)
        return loss, next(self.accuracies), logs


def test_early_stopping_counts_epochs_without_a_better_accuracy(digits, tmp_path):
    settings = LoopSettings(parse_stages("all:3,all:5"), lr=1e-2, progress=False)
    callbacks = standard_callbacks(tmp_path / "ck", tmp_path / "h.jsonl", patience=2)
    result = Trainer(settings, callbacks).fit(ScriptedValidation([0.5, 0.6, 0.6, 0.7, 0.65, 0.7, 0.9, 0.9]),
                                              network(), data(digits))
    # 0.6 and 0.7 again are no improvement: two stale epochs after epoch 4 end the fit at epoch 6
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4, 5, 6]
    assert (result.best_epoch, result.best_accuracy) == (4, 0.7)
    assert [row["stage"] for row in result.history] == ["all"] * 6
    assert load_checkpoint(tmp_path / "ck" / "last.pt")["stale"] == 2


def test_a_non_finite_loss_stops_with_one_clear_line(digits, tmp_path):
    settings = LoopSettings(parse_stages("all:2"), lr=1e6, optimizer="sgd", progress=False)  # far too high
    # no epoch finished: the line names no checkpoint (there is none)
    with pytest.raises(GraftError, match=r"loss became (nan|inf) in stage all, epoch 1: use --lr auto .* or a "
                                         r"smaller --lr; no epoch finished, so no model is kept$"):
        Trainer(settings, standard_callbacks(tmp_path / "ck", tmp_path / "h.jsonl")).fit(Supervised(), network(),
                                                                                        data(digits))
    assert not (tmp_path / "h.jsonl").exists()  # no epoch finished


class Recorder(Callback):
    def __init__(self):
        self.calls, self.steps = [], 0

    def on_fit_start(self, trainer):
        self.calls.append(("fit_start", trainer.state.resumed_epoch))

    def on_stage_start(self, trainer, run):
        self.calls.append(("stage", run.index, run.augmented))

    def on_before_backward(self, trainer, loss):
        self.steps += 1

    def on_epoch_end(self, trainer, row):
        self.calls.append(("epoch", row["epoch"], trainer.state.improved == (trainer.state.best_epoch == row["epoch"])))

    def on_fit_end(self, trainer):
        self.calls.append(("fit_end", self.steps))

    def state_dict(self):
        return {"recorder_steps": self.steps}

    def load_state_dict(self, checkpoint):
        self.steps = checkpoint["recorder_steps"]


def test_callbacks_are_called_in_order_and_their_state_is_checkpointed(digits, tmp_path):
    settings = LoopSettings(parse_stages("all:1,all:2"), augmented=[False, True], progress=False)
    recorder = Recorder()
    Trainer(settings, [*standard_callbacks(tmp_path / "ck", tmp_path / "h.jsonl"), recorder]).fit(
        Supervised(), network(), data(digits))
    steps = 3 * (300 // 32)  # 3 epochs of whole batches (the last partial batch is dropped)
    assert recorder.calls == [("fit_start", None), ("stage", 0, False), ("epoch", 1, True), ("stage", 1, True),
                              ("epoch", 2, True), ("epoch", 3, True), ("fit_end", steps)]
    checkpoint = load_checkpoint(tmp_path / "ck" / "last.pt")
    assert checkpoint["recorder_steps"] == steps
    again = Recorder()
    Trainer(settings, [again]).fit(Supervised(), network(), data(digits), resume=checkpoint)
    assert again.calls == [("fit_start", 3), ("fit_end", steps)]  # nothing left to train


def test_frozen_prefix_runs_once_per_plain_stage_with_the_same_training(digits, tmp_path):
    """A head stage on plain images trains on the frozen trunk's cached outputs; the numbers
    are those of running the whole network every epoch."""
    settings = LoopSettings(parse_stages("head:2"), augmented=[False], lr=3e-2, progress=False)

    def fit(callbacks, method):
        net = network()
        net.model.eval()  # BatchNorm of a frozen trunk keeps its statistics either way
        return Trainer(settings, callbacks).fit(method, net, data(digits)).history

    fast = fit([FrozenPrefix()], Supervised())
    slow = fit([], Supervised())
    needs_images = fit([FrozenPrefix()], Supervised(needs_images=True))
    assert [row["frozen_units_reused"] for row in fast] == [6, 6]  # every unit of the trunk
    assert fast[0]["frozen_engine"] in ("onnx", "torch") and fast[0]["frozen_encode_seconds"] > 0
    assert [row["frozen_units_reused"] for row in slow + needs_images] == [0] * 4
    np.testing.assert_allclose([r["val_loss"] for r in fast], [r["val_loss"] for r in slow], rtol=1e-4)
    np.testing.assert_allclose([r["train_loss"] for r in fast], [r["train_loss"] for r in slow], rtol=1e-4)


def test_training_loader_samplers():
    labels = torch.tensor([0] * 40 + [1] * 4)  # 40:4, as a lopsided folder
    dataset = TensorDataset(torch.arange(44), labels)
    shuffled = training_loader(dataset, labels, 8, generator=torch.Generator().manual_seed(0))
    seen = torch.cat([batch[0] for batch in shuffled])
    assert len(seen) == 40 and len(set(seen.tolist())) == 40  # each item at most once; the partial batch dropped
    balanced = training_loader(dataset, labels, 8, "balanced", torch.Generator().manual_seed(0))
    drawn = torch.cat([batch[1] for _ in range(20) for batch in balanced])
    assert 0.4 < drawn.float().mean().item() < 0.6  # the 4 images of class 1 drawn about half the time
    whole = training_loader(dataset, labels, 64)
    assert sum(len(batch[0]) for batch in whole) == 44  # one batch only: nothing dropped
    with pytest.raises(GraftError, match="--sampler must be shuffle or balanced"):
        training_loader(dataset, labels, 8, "weighted")
    with pytest.raises(GraftError, match="not supported under torchrun"):
        training_loader(dataset, labels, 8, "balanced", distributed=True)


def test_methods_do_not_import_the_engine():
    code = ("import sys, graft.methods, graft.methods.alignment, graft.methods.distillation, "
            "graft.methods.multitask, graft.methods.regularization; "
            "print(sorted(m for m in sys.modules if m.startswith('graft.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
