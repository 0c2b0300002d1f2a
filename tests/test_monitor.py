"""Callbacks that monitor (Lightning's ``monitor`` / ``mode``): early stopping and the kept
epoch follow the metric asked for; staged unfreezing is a callback; the adversarial losses
are small modules. Real training on scikit-learn's handwritten digits (8x8, 10 classes)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from graft.cli import main
from graft.errors import GraftError
from graft.methods import Supervised
from graft.methods.adversarial import (
    ConditionalDomainAdversarialLoss,
    DomainAdversarialLoss,
    DomainDiscriminator,
    GradientReverseLayer,
)
from graft.train import parse_stages
from graft.train.callbacks import Callback, Monitor, StagedUnfreezing, load_checkpoint, standard_callbacks
from graft.train.loaders import training_loader
from graft.train.trainer import LoopSettings, Network, TrainData, Trainer

# lr 0.1 over all:8 on these digits: validation loss is lowest at an earlier epoch than the
# accuracy is highest, so the two monitors stop and keep differently
SETTINGS = LoopSettings(parse_stages("all:8"), lr=0.1, progress=False)


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
    head = nn.Sequential(nn.Dropout(0.2), nn.Linear(8 * 8 * 8, 10))
    return Network(nn.Sequential(trunk, head), trunk, head)


def data(digits, seed: int = 0) -> TrainData:
    train, val = digits
    generator = torch.Generator().manual_seed(seed)
    return TrainData(training_loader(train, train.tensors[1], 32, generator=generator),
                     DataLoader(val, batch_size=100), generator=generator)


def stopped_after(values: list[float], patience: int, lower_is_better: bool) -> int:
    """The epoch early stopping should end at: ``patience`` epochs in a row without a strictly better value."""
    best, stale = math.inf if lower_is_better else -math.inf, 0
    for epoch, value in enumerate(values, 1):
        better = value < best if lower_is_better else value > best
        best, stale = (value, 0) if better else (best, stale + 1)
        if stale >= patience:
            return epoch
    return len(values)


def without_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("seconds", "frozen_encode_seconds")} for row in rows]


def test_early_stopping_and_the_kept_epoch_follow_val_loss_min(digits, tmp_path):
    net = network()
    callbacks = standard_callbacks(tmp_path / "ck", tmp_path / "h.jsonl", patience=2, monitor="val_loss", mode="min")
    result = Trainer(SETTINGS, callbacks).fit(Supervised(), net, data(digits))
    losses = [row["val_loss"] for row in result.history]
    best = 1 + int(np.argmin(losses))
    assert len(result.history) == stopped_after(losses, 2, lower_is_better=True) < 8  # stopped early, on the loss
    assert result.best_epoch == result.kept_epoch == best == len(result.history) - 2
    assert best != 1 + int(np.argmax([row["val_accuracy"] for row in result.history]))  # the monitors disagree
    assert result.best_accuracy == result.history[best - 1]["val_accuracy"]
    kept = load_checkpoint(tmp_path / "ck" / "best.pt")
    assert (kept["epoch"], kept["monitor"], kept["mode"], kept["score"]) == (best, "val_loss", "min", losses[best - 1])
    assert all(torch.equal(v, kept["model"][k]) for k, v in net.model.state_dict().items())  # the best reloaded
    last = load_checkpoint(tmp_path / "ck" / "last.pt")
    assert (last["stale"], last["best_epoch"], last["best_score"]) == (2, best, losses[best - 1])

    # the default (validation accuracy, higher is better) stops and keeps by the accuracy instead
    default = Trainer(SETTINGS, standard_callbacks(tmp_path / "ck2", tmp_path / "h2.jsonl", patience=2)).fit(
        Supervised(), network(), data(digits))
    accuracies = [row["val_accuracy"] for row in default.history]
    assert len(default.history) == stopped_after(accuracies, 2, lower_is_better=False) != len(result.history)
    assert default.best_epoch == 1 + int(np.argmax(accuracies))


class Interrupt(Callback):
    """Stands for a kill after ``epochs`` epochs (after the checkpoint and the history line)."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_epoch_end(self, trainer, row: dict) -> None:
        if trainer.state.epoch == self.epochs:
            raise KeyboardInterrupt


def test_a_fit_monitoring_val_loss_resumes_to_the_same_stop_and_kept_epoch(digits, tmp_path):
    def callbacks(name, monitor="val_loss"):
        return standard_callbacks(tmp_path / name, tmp_path / f"{name}.jsonl", patience=2, monitor=monitor)

    straight = Trainer(SETTINGS, callbacks("a")).fit(Supervised(), network(), data(digits))
    # killed one epoch after the best: the resumed run must remember that best and its stale count
    killed_at = straight.best_epoch + 1
    with pytest.raises(KeyboardInterrupt):
        Trainer(SETTINGS, [*callbacks("b"), Interrupt(killed_at)]).fit(Supervised(), network(), data(digits))
    resume = load_checkpoint(tmp_path / "b" / "last.pt")
    resumed = Trainer(SETTINGS, callbacks("b")).fit(Supervised(), network(seed=7), data(digits, seed=7), resume=resume)
    assert without_times(resumed.history) == without_times(straight.history)
    assert (resumed.best_epoch, resumed.kept_epoch) == (straight.best_epoch, straight.kept_epoch)
    with pytest.raises(GraftError, match=r"kept epochs by val_loss \(min\), this run by val_accuracy \(max\)"):
        Trainer(SETTINGS, callbacks("b", monitor="val_accuracy")).fit(Supervised(), network(), data(digits),
                                                                      resume=resume)


def test_a_checkpoint_written_before_monitors_resumes_as_validation_accuracy(digits, tmp_path):
    """Runs killed before graft had monitors saved no monitor, mode or bests of their own: they
    continue as they were kept, by the highest validation accuracy."""
    def callbacks(name):
        return standard_callbacks(tmp_path / name, tmp_path / f"{name}.jsonl", patience=2)

    straight = Trainer(SETTINGS, callbacks("a")).fit(Supervised(), network(), data(digits))
    with pytest.raises(KeyboardInterrupt):
        Trainer(SETTINGS, [*callbacks("b"), Interrupt(straight.best_epoch + 1)]).fit(Supervised(), network(),
                                                                                     data(digits))
    older = {k: v for k, v in load_checkpoint(tmp_path / "b" / "last.pt").items()
             if k not in ("best_score", "monitor", "mode", "stopping_best")}
    resumed = Trainer(SETTINGS, callbacks("b")).fit(Supervised(), network(seed=7), data(digits, seed=7), resume=older)
    assert without_times(resumed.history) == without_times(straight.history)
    assert (resumed.best_epoch, resumed.best_accuracy) == (straight.best_epoch, straight.best_accuracy)


def test_runs_saved_before_monitors_read_as_kept_by_validation_accuracy():
    from graft.recipes.settings.versions import read_settings

    older = {"command": "finetune", "settings": {"train_dir": "/d", "backbone": "resnet10t", "stages": "head:1",
                                                 "augment": "crop-flip", "seed": 0}}  # no settings_version: 1
    settings = read_settings(older, "RUN/config.yaml")["settings"]
    assert (settings["monitor"], settings["mode"]) == ("val_accuracy", "max")


def test_monitor_modes_and_a_name_the_row_lacks():
    assert (Monitor("val_loss").mode, Monitor("val_accuracy").mode, Monitor("val_loss", "max").mode) == \
        ("min", "max", "max")
    loss = Monitor("val_loss")
    assert loss.better(0.1, 0.2) and not loss.better(0.2, 0.2) and not loss.better(float("nan"), loss.worst)
    with pytest.raises(GraftError, match="monitor 'val_acc': the epoch's history row has no such number; give "
                                         "one of epoch, val_loss, val_accuracy$"):
        Monitor("val_acc").value({"epoch": 1, "stage": "all", "val_loss": 0.3, "val_accuracy": 0.9})
    with pytest.raises(GraftError, match="mode 'up'"):
        Monitor("val_loss", "up")


def test_the_command_takes_monitor_and_mode(digits_dir, tmp_path):
    tiny = ["--arch", "resnet10t", "--image-size", "32", "--batch-size", "16", "--stages", "all:3",
            "--augment", "none"]  # pretrain: a finetune from random weights
    out = tmp_path / "run"
    # --mode max on a loss keeps its worst epoch: perverse, but it shows both options reach the
    # checkpoint (the loss falls here, so neither the last epoch nor --mode auto's choice)
    result = CliRunner().invoke(main, ["pretrain", str(digits_dir), *tiny, "--monitor", "val_loss", "--mode", "max",
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    losses = [json.loads(line)["val_loss"] for line in (out / "history.jsonl").read_text().splitlines()]
    training = json.loads((out / "model" / "graft.json").read_text())["training"]
    assert training["best_epoch"] == 1 + int(np.argmax(losses)) != 1 + int(np.argmin(losses))
    assert training["epoch_kept_by"] == "validation loss"
    assert load_checkpoint(out / "checkpoints" / "best.pt")["mode"] == "max"

    bad = CliRunner().invoke(main, ["pretrain", str(digits_dir), *tiny, "--monitor", "val_acc",
                                    "-o", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "val_acc" in bad.output and not (tmp_path / "bad").exists()


def test_staged_unfreezing_is_a_callback_the_trainer_adds_unless_given(digits):
    def trained(plan: str, callbacks=()) -> list[bool]:
        """Per trunk unit with weights, whether training changed them."""
        net = network()
        before = [p.detach().clone() for p in net.trunk.parameters()]
        Trainer(LoopSettings(parse_stages(plan), lr=3e-2, progress=False), callbacks).fit(Supervised(), net,
                                                                                         data(digits))
        return [not torch.equal(a, b) for a, b in zip(before, net.trunk.parameters())]

    assert not any(trained("head:1"))  # no callback given: the plan's head stage still freezes the trunk
    assert all(trained("all:1"))
    # another unfreezing rule, given as the callback: the first conv (unit "0") stays frozen in an all stage
    assert trained("all:1", [StagedUnfreezing(always_frozen=("0",))]) == [False, False, True, True, True, True]


def test_the_adversarial_losses_share_one_reversal_layer():
    torch.manual_seed(0)
    grl = GradientReverseLayer(max_weight=0.5, total_steps=4)
    discriminator = DomainDiscriminator(6, hidden=8)
    dann = DomainAdversarialLoss(discriminator, grl)
    features = torch.randn(6, 6, requires_grad=True)
    for _ in range(4):
        grl.advance()
    loss, accuracy = dann(features, n_source=3)
    domains = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    expected = F.binary_cross_entropy_with_logits(discriminator(features).squeeze(1), domains)
    assert torch.allclose(loss, expected) and 0.0 <= accuracy <= 1.0
    plain = torch.autograd.grad(expected, features)[0]
    reversed_ = torch.autograd.grad(loss, features)[0]
    assert grl.weight > 0.49 and torch.allclose(reversed_, -grl.weight * plain, atol=1e-6)

    # CDAN sees features x softmax (6 x 2 = 12 wide) through the same layer, at the same weight
    cdan = ConditionalDomainAdversarialLoss(DomainDiscriminator(12, hidden=8), grl)
    logits = torch.randn(6, 2)
    _, accuracy = cdan(features, logits, n_source=3)
    assert 0.0 <= accuracy <= 1.0 and cdan.grl is dann.grl
