"""A clustering head trained on frozen features by neighbourhood consistency (SCAN's
clustering step, Van Gansbeke et al. 2020, "SCAN: Learning to Classify Images without
Labels", written from the paper).

Each image's nearest neighbours in the pretrained feature space mostly show the same kind of
thing. A small softmax head is trained so that an image and a random one of its neighbours
get the same cluster (the dot product of their cluster probabilities is pushed to 1), while
the entropy of the mean cluster probability is pushed up so that every cluster is used.
Several heads start from different random weights in one batched module; the head with the
lowest loss over all neighbour pairs is kept (as SCAN does): on flowers17 that choice picks
heads well above the heads' mean.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from graft.clustering.embedding import DEFAULT_DIMS, DEFAULT_NEIGHBOURS, Projection, as_matrix, nearest_neighbours
from graft.errors import GraftError

VOTE = 10  # nearest neighbours whose mean probabilities are averaged with an image's own


def _heads_module(n_heads: int, dims: int, hidden: int, k: int):
    """``n_heads`` MLPs (dims -> hidden -> BatchNorm -> ReLU -> k) as one module: (n, dims) ->
    (n_heads, n, k) logits; batched so ten heads train at the cost of one wide one."""
    import torch
    from torch import nn

    class Heads(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = nn.Parameter(torch.randn(n_heads, dims, hidden) / dims ** 0.5)
            self.b1 = nn.Parameter(torch.zeros(n_heads, 1, hidden))
            self.norm = nn.BatchNorm1d(n_heads * hidden)
            self.w2 = nn.Parameter(torch.randn(n_heads, hidden, k) / hidden ** 0.5)
            self.b2 = nn.Parameter(torch.zeros(n_heads, 1, k))

        def forward(self, x):
            # the heads share their input: their first layers are one (n, dims) x (dims, heads * hidden) product,
            # already in the (n, heads * hidden) layout BatchNorm takes (no per-head products, no transposed copies)
            w1 = self.w1.permute(1, 0, 2).reshape(dims, n_heads * hidden)
            h = self.norm(torch.addmm(self.b1.reshape(1, -1), x, w1)).reshape(x.shape[0], n_heads, hidden)
            return torch.einsum("nhd,hdk->hnk", torch.relu(h), self.w2) + self.b2

    return Heads()


def scan_loss(anchor_logits, neighbour_logits, entropy_weight: float):
    """Per head (H,): -mean log <p(anchor), p(neighbour)> - entropy_weight * H(mean p(anchor)),
    for logits (H, n, k)."""
    import torch

    p, q = anchor_logits.softmax(-1), neighbour_logits.softmax(-1)
    consistency = -torch.log((p * q).sum(-1).clamp_min(1e-8)).mean(-1)
    mean = p.mean(1)
    entropy = -(mean * torch.log(mean.clamp_min(1e-8))).sum(-1)
    return consistency - entropy_weight * entropy


class ClusterHead(ClusterMixin, BaseEstimator):
    """Cluster frozen features with SCAN's neighbourhood-consistency head; a scikit-learn
    clusterer (``fit``, ``fit_predict``, ``predict``, ``predict_proba``).

    Parameters
    ----------
    n_clusters : clusters to make (>= 2).
    n_heads : heads trained from different random starts; the lowest-loss one is kept.
    dims : principal components kept of the L2-normalised features (:class:`Projection`).
    hidden : width of each head's hidden layer.
    neighbours : nearest neighbours mined per image (cosine similarity, in the projection); at
        most half the mean cluster size (n / (2 n_clusters)).
    entropy_weight : weight of the entropy term that spreads images over the clusters (5, SCAN's).
    epochs, batch_size, lr : Adam, weight decay 1e-4.
    random_state : seeds the projection, the heads and the neighbour draws.

    Attributes
    ----------
    projection_ : the fitted :class:`Projection`.
    neighbours_ : (n, neighbours) indices.
    probabilities_ : (n, n_clusters): the kept head's, averaged with the mean of the image's
        10 nearest neighbours'.
    labels_ : (n,).
    head_losses_ : (n_heads,).
    best_head_, head_ : the kept head's index, and the head (a torch module on projected features).
    """

    def __init__(self, n_clusters: int = 10, n_heads: int = 20, dims: int = DEFAULT_DIMS, hidden: int = 256,  # noqa: PLR0913
                 neighbours: int = DEFAULT_NEIGHBOURS, entropy_weight: float = 5.0, epochs: int = 60,
                 batch_size: int = 256, lr: float = 1e-3, random_state: int = 0):
        self.n_clusters = n_clusters
        self.n_heads = n_heads
        self.dims = dims
        self.hidden = hidden
        self.neighbours = neighbours
        self.entropy_weight = entropy_weight
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.random_state = random_state

    def fit(self, X, y=None) -> "ClusterHead":
        """Train on features ``X`` (n, d); ``y`` is ignored (scikit-learn's signature)."""
        import torch

        X = as_matrix(X)
        if not 2 <= int(self.n_clusters) <= X.shape[0]:
            raise GraftError(f"n_clusters must be between 2 and the number of images ({X.shape[0]}), "
                             f"got {self.n_clusters}")
        torch.manual_seed(self.random_state)
        self.projection_ = Projection(self.dims, self.random_state).fit(X)
        Z = torch.from_numpy(self.projection_.transform(X))
        # a neighbour list longer than half an expected cluster would reach into other clusters (small folders)
        self.neighbours_, _ = nearest_neighbours(Z.numpy(), min(self.neighbours,
                                                                max(1, X.shape[0] // (2 * int(self.n_clusters)))))
        # one thread: the matrices are small, and on a busy 2-core machine threads cost 7x more than they save
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            heads = self._train(Z, torch.from_numpy(self.neighbours_))
            heads.eval()
            with torch.no_grad():
                logits = heads(Z)
        finally:
            torch.set_num_threads(threads)
        with torch.no_grad():
            losses = torch.stack([scan_loss(logits, logits[:, self.neighbours_[:, j]], self.entropy_weight)
                                  for j in range(self.neighbours_.shape[1])]).mean(0)
        self.head_losses_ = losses.numpy().astype(float)
        self.best_head_ = int(np.argmin(self.head_losses_))
        self.head_ = _Kept(heads, self.best_head_)
        own = logits[self.best_head_].softmax(-1).numpy()
        # each image's probabilities averaged with the mean of its 10 nearest neighbours': a vote that
        # moves a doubtful image to its neighbourhood's cluster (flowers17 +0.4 points, hymenoptera +0.5, 3 seeds;
        # the 10 nearest agree with an image's class more often than the 20 the heads train on: 0.83 vs 0.78)
        self.probabilities_ = (own + own[self.neighbours_[:, :VOTE]].mean(1)) / 2
        self.labels_ = self.probabilities_.argmax(1)
        return self

    def _train(self, Z, neighbours):
        import torch

        n, k = Z.shape[0], neighbours.shape[1]
        generator = torch.Generator().manual_seed(self.random_state)
        heads = _heads_module(self.n_heads, Z.shape[1], self.hidden, int(self.n_clusters))
        optimiser = torch.optim.Adam(heads.parameters(), lr=self.lr, weight_decay=1e-4)
        batch = max(2, min(self.batch_size, n))
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch):
                anchors = order[start:start + batch]
                if len(anchors) < 2:  # BatchNorm needs two rows
                    continue
                partners = neighbours[anchors, torch.randint(k, (len(anchors),), generator=generator)]
                logits = heads(torch.cat([Z[anchors], Z[partners]]))
                loss = scan_loss(logits[:, :len(anchors)], logits[:, len(anchors):], self.entropy_weight).sum()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
        return heads

    def predict_proba(self, X) -> np.ndarray:
        """Cluster probabilities (n, n_clusters) of new features from the kept head."""
        import torch

        with torch.no_grad():
            return self.head_(torch.from_numpy(self.projection_.transform(X))).softmax(-1).numpy()

    def predict(self, X) -> np.ndarray:
        """The most probable cluster (n,) of each row of ``X``."""
        return self.predict_proba(X).argmax(1)


class _Kept:
    """One head of the batched module (the others' weights are kept too; they are small)."""

    def __init__(self, heads, index: int):
        self.heads, self.index = heads, index

    def __call__(self, Z):
        return self.heads(Z)[self.index]


def cluster_features(X, n_clusters: int, seed: int = 0, **params) -> ClusterHead:
    """:class:`ClusterHead` fitted on ``X`` (n, d) with ``n_clusters``; ``params`` as its own."""
    return ClusterHead(n_clusters=n_clusters, random_state=seed, **params).fit(X)
