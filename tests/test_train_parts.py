"""Fine-tuning parts (issue #3): stage plans, trainable sets, frozen BatchNorm, L2-SP, LwF."""
from __future__ import annotations

import pytest
import torch

from graft.errors import GraftError
from graft.heads.modules import MLPHead
from graft.methods.regularization import L2SP, LwFDistillation
from graft.train import apply_stage, block_units, parse_stages, set_train_mode


@pytest.fixture()
def trunk_and_head(lite0):
    net = lite0.feature_net(None)
    return net.trunk, MLPHead(1280, 3, hidden=16)


def test_parse_stage_plan():
    stages = parse_stages("head:5,top2:4,all:3")
    assert [(s.name, s.epochs, s.top_blocks) for s in stages] == [("head", 5, 0), ("top2", 4, 2), ("all", 3, None)]
    for bad in ("", "head", "top:3", "head:0", "middle:2"):
        with pytest.raises(GraftError):
            parse_stages(bad)


def test_each_stage_trains_what_the_plan_says(trunk_and_head):
    trunk, head = trunk_and_head
    blocks = block_units(trunk)
    assert blocks[0] == "blocks.0.0" and blocks[-1] == "blocks.6.0" and len(blocks) == 16

    def trainable_units():
        return sorted({n.rsplit(".", 2)[0] if n.startswith("blocks") else n.split(".")[0]
                       for n, p in trunk.named_parameters() if p.requires_grad})

    stages = parse_stages("head:1,top2:1,all:1")
    apply_stage(trunk, head, stages[0])
    assert trainable_units() == [] and all(p.requires_grad for p in head.parameters())
    apply_stage(trunk, head, stages[1])
    assert trainable_units() == ["blocks.5.3", "blocks.6.0", "bn2", "conv_head"]
    apply_stage(trunk, head, stages[2])
    assert all(p.requires_grad for p in trunk.parameters())


def test_freeze_first_k_by_index_and_name(trunk_and_head):
    trunk, head = trunk_and_head
    names = apply_stage(trunk, head, freeze_first=3)
    assert not any(n.startswith(("conv_stem", "bn1.", "blocks.0.0")) for n in names)
    assert any(n.startswith("blocks.1.0") for n in names)
    assert apply_stage(trunk, head, freeze_first="blocks.0.0") == names


def test_frozen_batchnorm_keeps_running_stats(trunk_and_head):
    trunk, head = trunk_and_head
    apply_stage(trunk, head, parse_stages("top1:1")[0])
    set_train_mode(trunk)
    frozen_bn, trained_bn = trunk.bn1, trunk.bn2
    assert not frozen_bn.training and trained_bn.training
    before = frozen_bn.running_mean.clone(), trained_bn.running_mean.clone()
    trunk(torch.randn(4, 3, 64, 64) * 3 + 1)
    assert torch.equal(frozen_bn.running_mean, before[0])
    assert not torch.equal(trained_bn.running_mean, before[1])


def test_l2sp_zero_at_start_positive_after_a_step(trunk_and_head):
    trunk, head = trunk_and_head
    apply_stage(trunk, head, parse_stages("top1:1")[0])
    shared = {n: p for n, p in trunk.named_parameters()}
    penalty = L2SP(shared, alpha=0.1, beta=0.0)
    assert penalty().item() == 0.0
    opt = torch.optim.SGD([p for p in trunk.parameters() if p.requires_grad] + list(head.parameters()), lr=0.1)
    loss = torch.nn.functional.cross_entropy(head(trunk(torch.randn(2, 3, 64, 64))), torch.tensor([0, 1]))
    loss.backward()
    opt.step()
    after = penalty()
    assert after.item() > 0
    opt.zero_grad()
    after.backward()  # the penalty's gradient points back to the source weights
    moved = trunk.bn2.weight
    assert torch.allclose(moved.grad, 0.1 * (moved.detach() - penalty.source["bn2.weight"]), atol=1e-6)


def test_lwf_zero_for_unchanged_model_positive_otherwise():
    source = torch.randn(8, 1000)
    lwf = LwFDistillation(temperature=2.0)
    assert lwf(source.clone(), source).abs().item() < 1e-6
    assert lwf(source + torch.randn(8, 1000), source).item() > 0


def test_layer_decay_gives_each_trainable_unit_a_smaller_lr(trunk_and_head):
    from graft.train.optim import stage_optimizer
    from graft.train.trainer import LoopSettings

    trunk, head = trunk_and_head
    settings = LoopSettings(stages=parse_stages("top2:1"), lr=1e-2, base_lr_factor=0.1, layer_decay=0.5)
    optimizer, _, trainable, _ = stage_optimizer(settings, settings.stages[0], trunk, head, steps_per_epoch=4)
    groups = optimizer.param_groups
    # head, then the trainable units from the top down: bn2, conv_head, blocks.6.0, blocks.5.3
    assert [g["name"] for g in groups] == ["head", "bn2", "conv_head", "blocks.6.0", "blocks.5.3"]
    assert [g["peak_lr"] for g in groups] == pytest.approx([1e-2, 1e-3, 5e-4, 2.5e-4, 1.25e-4])
    grouped = {id(p) for g in groups[1:] for p in g["params"]}
    assert grouped == {id(p) for p in trunk.parameters() if p.requires_grad} and len(trainable) > 0


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_stage_schedules_shape(trunk_and_head, schedule):
    from graft.train.optim import stage_optimizer
    from graft.train.trainer import LoopSettings

    trunk, head = trunk_and_head
    settings = LoopSettings(stages=parse_stages("head:2"), lr=1e-2, schedule=schedule)
    optimizer, scheduler, _, _ = stage_optimizer(settings, settings.stages[0], trunk, head, steps_per_epoch=50)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    peak = max(range(100), key=lrs.__getitem__)
    assert lrs[peak] == pytest.approx(1e-2, rel=1e-3)
    assert lrs[-1] < 1e-2 * 0.01  # annealed to (nearly) nothing
    if schedule == "onecycle":
        assert lrs[0] == pytest.approx(1e-2 / 25) and 20 <= peak <= 26
    else:
        assert peak <= 10  # 10 % warm-up


def test_lr_suggestion_is_the_steepest_descent_before_the_minimum():
    import numpy as np

    from graft.train.lr_find import suggest

    lrs = np.logspace(-6, 0, 121)
    log_lr = np.log10(lrs)
    loss = 2.5 - 2.0 / (1 + np.exp(-(log_lr + 3) * 3))  # steepest at 1e-3
    loss = loss + np.where(log_lr > -1, (log_lr + 1) ** 2 * 20, 0)  # blows up above 0.1
    steepest, lowest = suggest(lrs, loss, skip=5)
    assert steepest == pytest.approx(1e-3, rel=0.15)
    assert 1e-2 < lowest <= 0.12
    only_rising = suggest(lrs, np.linspace(1, 5, 121), skip=5)
    assert only_rising[0] == pytest.approx(lrs[5] / 10)  # no descent at all: a tenth of the start


def test_lr_sweep_puts_weights_buffers_and_modes_back(trunk_and_head):
    from graft.backbones.backbone import PooledFeatures
    from graft.train.lr_find import lr_sweep

    trunk, head = trunk_and_head
    apply_stage(trunk, head, parse_stages("top1:1")[0])
    model = torch.nn.Sequential(PooledFeatures(trunk, None), head).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, 64, 64, generator=generator), torch.tensor([0, 1, 2, 0])) for _ in range(3)]
    trainable = [p for p in model.parameters() if p.requires_grad]
    sweep = lr_sweep(model, batches, lambda lr: torch.optim.SGD([{"params": trainable, "lr": lr}]),
                     start=1e-4, end=10.0, steps=30, progress=False)
    assert 5 <= len(sweep.lrs) <= 30 and sweep.lrs[0] == pytest.approx(1e-4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(module.training for module in model.modules())  # eval mode, as it was


def test_bss_regularizer_sees_the_features_the_head_gets(trunk_and_head):
    from graft.methods.regularization import BatchSpectralShrinkage, conservation_term

    trunk, head = trunk_and_head
    penalty = conservation_term("bss", 0.5, None, None, head)
    features = torch.randn(6, 1280)
    logits = head(features)
    expected = BatchSpectralShrinkage(k=1, eta=0.5)(features)
    assert penalty(None, logits).item() == pytest.approx(expected.item()) and expected.item() > 0
