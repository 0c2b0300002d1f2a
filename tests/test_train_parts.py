"""Fine-tuning parts (issue #3): stage plans, trainable sets, frozen BatchNorm, L2-SP, LwF."""
from __future__ import annotations

import pytest
import torch

from graft.errors import GraftError
from graft.heads import MLPHead
from graft.regularizers import L2SP, LwFDistillation
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
