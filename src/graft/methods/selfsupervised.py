"""Self-taught learning (Raina et al., ICML 2007) in today's form: a pretrained network continued
self-supervised on the user's unlabelled images, so its features fit their domain before any
label is used. The objective is SimSiam (Chen & He, "Exploring Simple Siamese Representation
Learning", CVPR 2021): two augmented views of each image, a projector on the pooled features
(the network's head while it trains) and a predictor (this method's own module); the predictor's
output of one view is pulled towards the other view's projection, which gets no gradient (the
stop-gradient that keeps SimSiam from collapsing without negatives, momentum encoders or large
batches, so it fits a CPU's small batches). Also AdaBN (Li et al., "Revisiting Batch
Normalization For Practical Domain Adaptation", 2016): BatchNorm statistics re-estimated on the
new images, before training and once more on the plain images at the end.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from graft.methods.base import StepOutput, TrainingMethod

__all__ = ["ROTATIONS", "ProjectionHead", "RotationPrediction", "SimSiam", "TwoViews", "adapt_batchnorm", "rotated",
           "simsiam_loss"]


class ProjectionHead(nn.Module):
    """SimSiam's projector, made smaller for a CPU: ``[B, in_features] -> [B, dim]`` through
    Linear-BN-ReLU and Linear-BN (the output BN without its affine, as the paper's)."""

    def __init__(self, in_features: int, hidden: int = 1024, dim: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden, bias=False), nn.BatchNorm1d(hidden),
                                 nn.ReLU(inplace=True), nn.Linear(hidden, dim, bias=False),
                                 nn.BatchNorm1d(dim, affine=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def predictor(dim: int) -> nn.Module:
    """SimSiam's bottleneck predictor ``[B, dim] -> [B, dim]`` (hidden width dim / 4)."""
    return nn.Sequential(nn.Linear(dim, dim // 4, bias=False), nn.BatchNorm1d(dim // 4), nn.ReLU(inplace=True),
                         nn.Linear(dim // 4, dim))


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """The symmetrised negative cosine similarity ``-(cos(p1, sg(z2)) + cos(p2, sg(z1))) / 2``
    (a scalar in [-1, 1]; -1 when each view predicts the other exactly)."""
    similarity = F.cosine_similarity(p1, z2.detach(), dim=1).mean() + F.cosine_similarity(p2, z1.detach(), dim=1).mean()
    return -similarity / 2


def output_spread(z: torch.Tensor) -> float:
    """The mean per-dimension standard deviation of the L2-normalised outputs ``[B, dim]``
    times sqrt(dim): about 1 for well-spread outputs, 0 when they collapse to one point (the
    collapse measure of the SimSiam paper, made independent of ``dim``)."""
    return float(F.normalize(z, dim=1).std(0).mean() * z.shape[1] ** 0.5)


class TwoViews(torch.utils.data.Dataset):
    """Two independently augmented views ``([3, H, W], [3, H, W])`` of each image of a dataset
    whose items are ``(view, label)`` (an augmenting :class:`~graft.data.datasets.ImageDataset`);
    labels are dropped. Random draws come from torch's global RNG, which checkpoints save."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index][0], self.dataset[index][0]


class SimSiam(TrainingMethod):
    """SimSiam on batches of two views ``(view1 [B, 3, H, W], view2 [B, 3, H, W])``; ``forward``
    maps images to projections ``[B, dim]`` (the network whose head is a
    :class:`ProjectionHead`). Both views go through the network as one batch. Each epoch's row
    gets ``output_spread`` (training) and ``val_output_spread`` (:func:`output_spread`); the
    validation loss is the same loss on the held-out images' two views (drawn from a fixed
    seed, so epochs compare), and there is no validation accuracy (no labels: None)."""

    name = "simsiam"
    needs_images = True  # a batch is two views, not one loader's images: no frozen-prefix cache
    loss_scale = 1.0

    def __init__(self, dim: int = 256, seed: int = 0):
        self.predictor = predictor(dim)
        self.seed = seed

    def modules(self) -> dict[str, nn.Module]:
        return {"predictor": self.predictor}

    def _loss(self, forward, batch) -> tuple[torch.Tensor, torch.Tensor]:
        view1, view2 = batch
        z = forward(torch.cat([view1, view2]))
        z1, z2 = z.chunk(2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return simsiam_loss(p1, p2, z1, z2), z1

    def training_step(self, forward, batch, augmented: bool) -> StepOutput:
        loss, z1 = self._loss(forward, batch)
        n = len(z1)
        return StepOutput(loss, n, 0, {"output_spread": output_spread(z1.detach()) * n})

    def evaluate(self, evaluated, val_loader) -> tuple[float, float, dict]:
        evaluated.eval()
        self.predictor.eval()
        total, spread, seen = 0.0, 0.0, 0
        # the same views every epoch, without touching the training run's random stream
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(self.seed)
            for batch in val_loader:
                loss, z1 = self._loss(evaluated, batch)
                n = len(z1)
                total, spread, seen = total + loss.item() * n, spread + output_spread(z1) * n, seen + n
        self.predictor.train()
        return total / max(1, seen), None, {"val_output_spread": spread / max(1, seen)}


@torch.no_grad()
def adapt_batchnorm(network: nn.Module, loader, progress=None, trainable_only: bool = False) -> int:
    """AdaBN: every BatchNorm layer of ``network`` (``trainable_only``: those whose parameters
    train now) gets the mean and variance of its inputs over all images of ``loader`` (batches
    ``(images [B, 3, H, W], ...)``), a cumulative average instead of the running one; weights
    are unchanged, the other layers run in the mode they are in. Returns the number of layers
    adapted. ``progress``: called once per batch (a progress bar's update)."""
    layers = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
              and (not trainable_only or any(p.requires_grad for p in m.parameters()))]
    saved = [(m.momentum, m.training) for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
        m.train()
    try:
        for batch in loader:
            network(batch[0])
            if progress is not None:
                progress()
    finally:
        for m, (momentum, training) in zip(layers, saved):
            m.momentum = momentum
            m.train(training)
    return len(layers)


ROTATIONS = ("rot0", "rot90", "rot180", "rot270")  # the classes of the rotation task, counter-clockwise


def rotated(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Each image ``[B, 3, H, W]`` (square) turned ``turns[i]`` quarter turns counter-clockwise."""
    out = images.clone()
    for k in range(1, 4):
        chosen = turns == k
        if chosen.any():
            out[chosen] = torch.rot90(images[chosen], k, dims=(2, 3))
    return out


class RotationPrediction(TrainingMethod):
    """Rotation prediction (Gidaris, Singh & Komodakis, "Unsupervised Representation Learning
    by Predicting Image Rotations", ICLR 2018): each image of a batch ``(images [B, 3, H, W],
    ignored labels)`` is turned by a random multiple of 90 degrees (torch's global RNG, which
    checkpoints save) and the network (a 4-way head, :data:`ROTATIONS`) predicts how far.
    Telling a 6 from a turned 9 or an upright digit from a lying one needs the shape, which a
    background texture shared by two crops (SimSiam's shortcut on MNIST-M) does not give.
    Validation: every held-out image in all four orientations; its accuracy is the rotation's."""

    name = "rotation"

    def training_step(self, forward, batch, augmented: bool) -> StepOutput:
        images = batch[0]
        turns = torch.randint(0, 4, (len(images),))
        logits = forward(rotated(images, turns))
        loss = F.cross_entropy(logits, turns)
        return StepOutput(loss, len(images), int((logits.argmax(1) == turns).sum()), labels=turns)

    def evaluate(self, evaluated, val_loader) -> tuple[float, float, dict]:
        evaluated.eval()
        total, correct, seen = 0.0, 0, 0
        with torch.inference_mode():
            for batch in val_loader:
                images = batch[0]
                for k in range(4):
                    turns = torch.full((len(images),), k)
                    logits = evaluated(rotated(images, turns))
                    total += F.cross_entropy(logits, turns, reduction="sum").item()
                    correct += int((logits.argmax(1) == turns).sum())
                    seen += len(images)
        return total / max(1, seen), correct / max(1, seen), {}
