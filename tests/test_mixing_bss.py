"""Batch Spectral Shrinkage and batch MixUp/CutMix: values, gradients, reproducibility."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from graft.errors import GraftError
from graft.methods.mixing import BatchMixer, soft_target_cross_entropy
from graft.methods.regularization import BatchSpectralShrinkage

# ---------------------------------------------------------------- BSS

def test_bss_matches_hand_computed_singular_values():
    # Orthogonal U, V and known singular values 5, 3, 2, 0.5: F = U diag(s) V^T.
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(6, 4, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    s = torch.tensor([5.0, 3.0, 2.0, 0.5], dtype=torch.float64)
    feats = u @ torch.diag(s) @ v.T
    assert BatchSpectralShrinkage(k=1, eta=1.0)(feats).item() == pytest.approx(0.25)
    assert BatchSpectralShrinkage(k=2, eta=0.1)(feats).item() == pytest.approx(0.1 * (4 + 0.25))
    # k larger than min(batch, dim) is clamped: all singular values, i.e. ||F||_F^2.
    assert BatchSpectralShrinkage(k=10, eta=1.0)(feats).item() == pytest.approx(25 + 9 + 4 + 0.25)
    # A wide matrix (batch < dim) has only `batch` singular values.
    wide = torch.diag(torch.tensor([4.0, 1.0])) @ torch.eye(2, 7)
    assert BatchSpectralShrinkage(k=1, eta=2.0)(wide).item() == pytest.approx(2.0)


def test_bss_gradient_shrinks_the_smallest_singular_value():
    torch.manual_seed(1)
    layer = nn.Linear(5, 4)
    x = torch.randn(8, 5)
    bss = BatchSpectralShrinkage(k=1, eta=1.0)
    before = torch.linalg.svdvals(layer(x).detach())
    loss = bss(layer(x))
    assert loss.requires_grad and loss.ndim == 0
    loss.backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    with torch.no_grad():
        for p in layer.parameters():
            p -= 0.05 * p.grad
    after = torch.linalg.svdvals(layer(x).detach())
    assert after[-1] < before[-1]
    # The largest direction is (nearly) untouched: BSS only shrinks the tail.
    assert after[0] == pytest.approx(before[0].item(), rel=0.05)


def test_bss_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k must be"):
        BatchSpectralShrinkage(k=0)
    with pytest.raises(ValueError, match="eta"):
        BatchSpectralShrinkage(eta=-1.0)
    with pytest.raises(ValueError, match="batch, dim"):
        BatchSpectralShrinkage()(torch.randn(2, 3, 4))


# ---------------------------------------------------------------- mixing

def batch(b=6, classes=None, h=16, w=12):
    images = torch.randn(b, 3, h, w)
    # Distinct labels, and no sample paired with one of its own class, so lam is readable.
    targets = torch.arange(b)
    return images, targets, classes or b


def test_soft_target_cross_entropy_equals_cross_entropy_on_one_hot():
    torch.manual_seed(2)
    logits, y = torch.randn(5, 7), torch.randint(0, 7, (5,))
    got = soft_target_cross_entropy(logits, F.one_hot(y, 7).float())
    assert got.item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    # And with soft labels it is the expectation of per-class cross-entropies.
    t = torch.softmax(torch.randn(5, 7), dim=1)
    expected = sum(t[:, c] * F.cross_entropy(logits, torch.full((5,), c), reduction="none") for c in range(7))
    assert got.item() != pytest.approx(soft_target_cross_entropy(logits, t).item())
    assert soft_target_cross_entropy(logits, t).item() == pytest.approx(expected.mean().item(), rel=1e-6)


def test_mixup_blends_images_with_the_lam_of_the_targets():
    torch.manual_seed(3)
    x, y, c = batch()
    mixer = BatchMixer(c, mixup_alpha=0.4)
    for _ in range(5):
        mixed, soft = mixer(x, y)
        assert soft.shape == (6, c)
        torch.testing.assert_close(soft.sum(1), torch.ones(6))
        lam = soft[0, y[0]].item()
        assert lam == pytest.approx(mixer.last_lam) and mixer.last_mode == "mixup"
        assert soft[0, y[-1]].item() == pytest.approx(1 - lam)
        torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.flip(0))
    assert mixed is not x


def test_cutmix_pastes_one_rectangle_whose_area_matches_the_targets():
    torch.manual_seed(4)
    x, y, c = batch(h=20, w=14)
    mixer = BatchMixer(c, cutmix_alpha=1.0)
    original = x.clone()
    seen_box = False
    for _ in range(20):
        mixed, soft = mixer(x, y)
        torch.testing.assert_close(x, original)  # the input is not modified
        torch.testing.assert_close(soft.sum(1), torch.ones(6))
        assert mixer.last_mode == "cutmix"
        changed = (mixed != x).any(dim=1)  # [B, H, W]
        # Every pixel is either the sample's own or its partner's.
        partner = x.flip(0)
        assert torch.where(changed[:, None], mixed == partner, mixed == x).all()
        # The same region in every sample, and it is a filled rectangle.
        assert (changed == changed[0]).all()
        region = changed[0]
        if region.any():
            seen_box = True
            rows = region.any(1).nonzero().squeeze(1)
            cols = region.any(0).nonzero().squeeze(1)
            assert rows.numel() == rows[-1] - rows[0] + 1 and cols.numel() == cols[-1] - cols[0] + 1
            assert region[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
        fraction = region.float().mean().item()
        assert soft[0, y[-1]].item() == pytest.approx(fraction, abs=1e-6)
        assert soft[0, y[0]].item() == pytest.approx(1 - fraction, abs=1e-6)
    assert seen_box


def test_switch_prob_picks_between_cutmix_and_mixup():
    torch.manual_seed(5)
    x, y, c = batch()
    modes = set()
    both = BatchMixer(c, mixup_alpha=0.5, cutmix_alpha=0.5, switch_prob=0.5)
    for _ in range(40):
        both(x, y)
        modes.add(both.last_mode)
    assert modes == {"cutmix", "mixup"}
    always = BatchMixer(c, mixup_alpha=0.5, cutmix_alpha=0.5, switch_prob=1.0)
    for _ in range(10):
        mixed, _ = always(x, y)
        assert always.last_mode == "cutmix"
        assert ((mixed == x) | (mixed == x.flip(0))).all()


def test_disabled_mixer_returns_images_and_smoothed_one_hots():
    x, y, c = batch()
    mixer = BatchMixer(c, label_smoothing=0.1)
    assert not mixer.enabled and BatchMixer(c, cutmix_alpha=1.0).enabled
    state = torch.get_rng_state()
    mixed, soft = mixer(x, y)
    assert mixed is x
    assert torch.equal(torch.get_rng_state(), state)  # no draws when disabled
    expected = torch.full((6, c), 0.1 / c)
    expected[torch.arange(6), y] = 0.9 + 0.1 / c
    torch.testing.assert_close(soft, expected)


def test_label_smoothing_applies_before_mixing():
    torch.manual_seed(6)
    x, y, c = batch()
    mixer = BatchMixer(c, mixup_alpha=1.0, label_smoothing=0.2)
    _, soft = mixer(x, y)
    lam = mixer.last_lam
    torch.testing.assert_close(soft.sum(1), torch.ones(6))
    assert soft[0, y[0]].item() == pytest.approx(lam * 0.8 + 0.2 / c)
    assert soft[0, y[-1]].item() == pytest.approx((1 - lam) * 0.8 + 0.2 / c)
    assert soft[0, y[1]].item() == pytest.approx(0.2 / c)


def test_same_torch_seed_gives_identical_batches_whatever_numpy_and_random_do():
    x, y, c = batch()
    mixer = BatchMixer(c, mixup_alpha=0.3, cutmix_alpha=1.0)

    def run(other_seed):
        random.seed(other_seed)
        np.random.seed(other_seed)
        torch.manual_seed(123)
        return [mixer(x, y) for _ in range(6)]

    py_state, np_state = random.getstate(), np.random.get_state()
    first, second = run(1), run(2)
    for (m1, s1), (m2, s2) in zip(first, second):
        assert torch.equal(m1, m2) and torch.equal(s1, s2)
    # Resuming from a saved torch RNG state reproduces the continuation exactly.
    torch.manual_seed(7)
    mixer(x, y)
    saved = torch.get_rng_state()
    after = mixer(x, y)
    torch.set_rng_state(saved)
    again = mixer(x, y)
    assert torch.equal(after[0], again[0]) and torch.equal(after[1], again[1])
    # A different seed gives a different stream (so the test above is not vacuous).
    torch.manual_seed(124)
    other = [mixer(x, y) for _ in range(6)]
    assert any(not torch.equal(a[1], b[1]) for a, b in zip(first, other))
    # Mixing itself never touches python's or numpy's generators.
    random.setstate(py_state)
    np.random.set_state(np_state)
    mixer(x, y)
    assert random.getstate() == py_state
    assert np.array_equal(np.random.get_state()[1], np_state[1])


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 0}, "num_classes"),
    ({"num_classes": 3, "mixup_alpha": -0.1}, "mixup_alpha"),
    ({"num_classes": 3, "cutmix_alpha": -1.0}, "cutmix_alpha"),
    ({"num_classes": 3, "switch_prob": 1.5}, "switch_prob"),
    ({"num_classes": 3, "label_smoothing": 1.0}, "label_smoothing"),
])
def test_bad_mixer_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        BatchMixer(**kwargs)
    assert isinstance(info.value, GraftError)


def test_mismatched_shapes_raise():
    mixer = BatchMixer(3, cutmix_alpha=1.0)
    with pytest.raises(ValueError, match="targets"):
        mixer(torch.randn(4, 3, 8, 8), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="CutMix"):
        mixer(torch.randn(4, 8), torch.zeros(4, dtype=torch.long))
