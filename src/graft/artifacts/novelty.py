"""How unlike the training images an input is: a novelty score and an "unfamiliar" flag.

Two scores see different failures, so both are used and combined:

* **feature distance**: cosine distance of the pooled feature to its k-th nearest training
  feature (k = 10; Sun et al. 2022, "Out-of-distribution detection with deep nearest
  neighbors"). It flags images far from everything seen (grey squares, noise, digits), which a
  classifier may still score with confidence.
* **doubt**: 1 - the maximum softmax probability (Hendrycks & Gimpel 2017) of a weakly
  regularised logistic regression fitted on the standardised, unit-length training features
  for this purpose (C = 100). It flags images near the training data that no class fits well
  (a flower for an ants/bees model), which the distance misses. The model's own head is tuned
  for accuracy (often strongly regularised) and its confidence separated these less well
  (BENCHMARKS.md). Without integer training labels (a multi-task model) the doubt is the
  model's energy, ``-logsumexp(logits)`` per task, averaged (Liu et al. 2020).

Each score is turned into a tail p-value against the validation images (the fraction of them
scoring at least as high, interpolated between them, with an exponential tail past the
highest), and the two are combined
by Fisher's method: ``novelty = -ln p_distance - ln p_doubt`` (0 for the most typical image,
about ``2 ln(n_val + 1)`` at the edge of the validation images, more beyond).

The threshold is a split-conformal quantile (Vovk et al. 2005; Angelopoulos & Bates 2021,
"A gentle introduction to conformal prediction"), made with every validation image held out in
turn: each is scored against the other validation images' references, as a new image is scored
against all of them (its own score never counts for itself), and the threshold is the
``ceil((n + 1) * 0.95)``-th smallest of those n scores. Then a new image drawn like the
validation images is flagged with probability at most 5 % (``(n + 1 - rank) / (n + 1)``, kept as
``flag_rate``), averaged over validation sets; one threshold's own rate varies around it (the
spread is that of a Beta(n + 1 - rank, rank) draw: +-2.7 points at n = 61), so with fewer than
50 validation images the fit warns. Below 19 images no rank reaches 95 %: the threshold is the
highest held-out score and the rate is ``1 / (n + 1)``. The flag says nothing about images unlike
the validation images' domain except that they tend to score higher. BENCHMARKS.md has the
AUROC of each score and the flag rates on unseen in-domain, near and far images.

The statistics live in the model folder as ``novelty.safetensors`` (float32 tensors; the
parameters as JSON in its metadata): nothing is unpickled and the module needs only numpy.
A model without the file (trained before this) answers ``novelty`` None.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NOVELTY_FILE = "novelty.safetensors"
NOVELTY_FORMAT = 1
NEIGHBOURS = 10
DOUBT_C = 100.0  # inverse L2 strength of the doubt classifier (BENCHMARKS.md: C swept 0.01 .. 1000)
FLAG_QUANTILE = 0.95
THRESHOLD_MARGIN = 1e-3
MIN_VALIDATION = 5  # fewer validation images give no usable threshold: no statistics are stored
FEW_VALIDATION = 50  # below this the threshold's own flag rate is too uncertain to state without a warning
SCORE_NAME = "fisher(knn-cosine, doubt)"
_DOUBT_KEYS = ("doubt_weight", "doubt_bias", "doubt_mean", "doubt_scale")


@dataclass
class Novelty:
    """The statistics one model needs to score novelty at prediction time.

    ``bank``: (n_train, d) unit-length training features; ``distance_ref`` / ``doubt_ref``: the
    validation images' scores, sorted; ``doubt``: the doubt classifier's arrays (weight (C, d),
    bias (C,), mean (d,), scale (d,)), or None to use the model's energy; ``slices``: each
    task's logit columns; ``threshold``: novelty above it is unfamiliar.
    """

    bank: np.ndarray
    distance_ref: np.ndarray
    doubt_ref: np.ndarray
    doubt: dict | None
    slices: list[tuple[int, int]]
    k: int
    threshold: float
    flag_rate: float = 1 - FLAG_QUANTILE  # expected share of new in-domain images flagged

    # -- scores -------------------------------------------------------------------------------
    def distance(self, features: np.ndarray) -> np.ndarray:
        """(N, d) pooled features -> (N,) cosine distance to the k-th nearest training feature."""
        units = _unit_rows(np.asarray(features, np.float32))
        similarity = units @ self.bank.T
        k = min(self.k, similarity.shape[1])
        kth = np.partition(similarity, similarity.shape[1] - k, axis=1)[:, similarity.shape[1] - k]
        return (1.0 - kth).astype(np.float64)

    def doubt_of(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """(N,) doubt: 1 - max softmax of the doubt classifier, or the model's energy."""
        if self.doubt is None:
            return energy_score(logits, self.slices)
        d = self.doubt
        z = _standardised(features, d["doubt_mean"], d["doubt_scale"]) @ d["doubt_weight"].T + d["doubt_bias"]
        z = z.astype(np.float64) - z.max(axis=1, keepdims=True)
        return 1.0 - 1.0 / np.exp(z).sum(axis=1)  # the top class's softmax is exp(0) / sum

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """(N,) novelty: Fisher's combination of the two scores' validation tail p-values."""
        return -np.log(_tail_p(self.distance_ref, self.distance(features))) \
            - np.log(_tail_p(self.doubt_ref, self.doubt_of(features, logits)))

    def judge(self, features: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(novelty (N,) float, unfamiliar (N,) bool)`` for pooled features (N, d) and logits (N, C)."""
        novelty = self.score(features, logits)
        return novelty, novelty > self.threshold

    # -- persistence --------------------------------------------------------------------------
    def save(self, model_dir: str | Path) -> Path:
        from safetensors.numpy import save_file

        from graft._io.files import atomic_path

        path = Path(model_dir) / NOVELTY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": str(NOVELTY_FORMAT), "params": json.dumps(
            {"k": self.k, "threshold": self.threshold, "slices": self.slices, "score": SCORE_NAME,
             "doubt": "classifier" if self.doubt else "energy", "flag_rate": self.flag_rate,
             "calibration": "leave-one-out conformal"})}
        tensors = {"bank": self.bank, "distance_ref": self.distance_ref, "doubt_ref": self.doubt_ref,
                   **(self.doubt or {})}
        with atomic_path(path) as tmp:
            save_file({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}, str(tmp), metadata=meta)
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> "Novelty | None":
        """The statistics in ``model_dir``, or None when it has none (a model trained before them).

        Raises :class:`~graft.errors.ModelError` for a damaged file."""
        from safetensors import safe_open

        from graft.errors import ModelError

        path = Path(model_dir) / NOVELTY_FILE
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="numpy") as handle:
                meta = handle.metadata() or {}
                if meta.get("format") != str(NOVELTY_FORMAT):
                    raise ValueError(f"format {meta.get('format')!r}, this graft reads {NOVELTY_FORMAT}")
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
            params = json.loads(meta["params"])
            doubt = {key: tensors[key] for key in _DOUBT_KEYS} if params["doubt"] == "classifier" else None
            return cls(tensors["bank"], tensors["distance_ref"].astype(np.float64),
                       tensors["doubt_ref"].astype(np.float64), doubt, [tuple(s) for s in params["slices"]],
                       int(params["k"]), float(params["threshold"]),
                       float(params.get("flag_rate", 1 - FLAG_QUANTILE)))
        except Exception as exc:  # safetensors, JSON and key errors alike: one line naming the file
            raise ModelError(f"{path}: not readable novelty statistics ({type(exc).__name__}: {exc})") from None

    def describe(self) -> dict:
        """JSON-ready summary for a model's metadata."""
        return {"score": SCORE_NAME, "doubt": "classifier" if self.doubt else "energy",
                "threshold": round(self.threshold, 4), "k": self.k, "n_train": int(self.bank.shape[0]),
                "n_val": int(self.distance_ref.shape[0]), "flag_rate_target": round(1 - FLAG_QUANTILE, 3),
                "flag_rate": round(self.flag_rate, 4)}


@dataclass
class NoveltyData:
    """What :func:`fit_novelty` learns from: training features (N_train, d) with their integer
    labels (N_train,) (None: use the model's energy), validation features (N_val, d) with the
    model's logits for them (N_val, C), and each task's (start, stop) logit columns."""

    train_features: np.ndarray
    train_labels: np.ndarray | None
    val_features: np.ndarray
    val_logits: np.ndarray
    slices: list[tuple[int, int]] | None = None


def fit_novelty(data: NoveltyData, k: int = NEIGHBOURS) -> Novelty | None:
    """The statistics of one model; None when there are fewer than 5 validation images.

    Fitted with BLAS on one thread, as the classical heads are: the doubt classifier's L-BFGS
    multiplies small matrices (1088 x 1280 features, 17 classes, ~30 iterations on flowers17),
    and threaded OpenBLAS made it 0.12 -> 3.6 s of CPU (11 s wall on a loaded machine)."""
    from graft.heads.classical import single_threaded_blas

    with single_threaded_blas():
        return _fit_novelty(data, k)


def _fit_novelty(data: NoveltyData, k: int) -> Novelty | None:
    train = np.asarray(data.train_features, np.float32)
    val = np.asarray(data.val_features, np.float32)
    val_logits = np.asarray(data.val_logits, np.float32)
    if len(val) < MIN_VALIDATION or len(train) < 2:
        return None
    slices = [tuple(map(int, s)) for s in (data.slices or [(0, val_logits.shape[1])])]
    stats = Novelty(_unit_rows(train), np.zeros(0), np.zeros(0), _fit_doubt(train, data.train_labels), slices,
                    min(k, len(train)), 0.0)
    distance, doubt = stats.distance(val), stats.doubt_of(val, val_logits)
    stats.distance_ref, stats.doubt_ref = np.sort(distance), np.sort(doubt)
    held_out = np.sort(_held_out_scores(distance, doubt))
    n = len(held_out)
    rank = min(int(np.ceil((n + 1) * FLAG_QUANTILE - 1e-9)), n)  # the conformal rank, 1-based
    # plus a margin far above float32 rounding (the ONNX model's features differ from
    # training's by ~1e-6) and far below the gaps between scores
    stats.threshold = float(held_out[rank - 1] + THRESHOLD_MARGIN)
    stats.flag_rate = (n + 1 - rank) / (n + 1)
    if n < FEW_VALIDATION:
        import warnings

        a, b = n + 1 - rank, rank  # the realised rate of one such threshold is Beta(a, b)
        spread = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
        warnings.warn(f"the unfamiliar flag's threshold rests on {n} validation images: it flags about "
                      f"{stats.flag_rate:.1%} of new images like them on average, but this threshold's own rate "
                      f"may be {100 * spread:.1f} points off; {FEW_VALIDATION} or more validation images make it "
                      "steadier")
    return stats


def _held_out_scores(distance: np.ndarray, doubt: np.ndarray) -> np.ndarray:
    """Each validation image's novelty against the references of the others (leave-one-out):
    the score it would have as a new image. (n,) scores -> (n,) novelty, O(n^2) for n images."""
    n = len(distance)
    refs = [np.sort(distance), np.sort(doubt)]
    ranks = [np.argsort(np.argsort(values, kind="stable"), kind="stable") for values in (distance, doubt)]
    out = np.empty(n)
    for i in range(n):
        out[i] = sum(-np.log(_tail_p(np.delete(ref, rank[i]), values[i:i + 1]))[0]
                     for ref, rank, values in zip(refs, ranks, (distance, doubt)))
    return out


def _fit_doubt(train: np.ndarray, labels) -> dict | None:
    """The doubt classifier's arrays, or None without usable labels (multi-task, one class)."""
    labels = None if labels is None else np.asarray(labels)
    if labels is None or labels.ndim != 1 or labels.dtype.kind not in "iu" or len(np.unique(labels)) < 2:
        return None
    from sklearn.linear_model import LogisticRegression

    mean, scale = train.mean(axis=0), train.std(axis=0) + 1e-6
    fitted = LogisticRegression(C=DOUBT_C, max_iter=2000).fit(_standardised(train, mean, scale), labels)
    weight, bias = fitted.coef_, fitted.intercept_
    if weight.shape[0] == 1:  # binary: scikit-learn keeps one row; softmax wants both
        weight, bias = np.vstack([-weight / 2, weight / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    return {"doubt_weight": weight.astype(np.float32), "doubt_bias": bias.astype(np.float32),
            "doubt_mean": mean.astype(np.float32), "doubt_scale": scale.astype(np.float32)}


def record_novelty(model_dir, data: NoveltyData) -> Path | None:
    """Fit the statistics and write them into ``model_dir`` (the training recipes' one call);
    an older statistics file is removed when there is too little validation data for new ones."""
    stats = fit_novelty(data)
    if stats is None:
        (Path(model_dir) / NOVELTY_FILE).unlink(missing_ok=True)
        return None
    return stats.save(model_dir)


def record_novelty_of_network(model_dir, model, train_loader, val_loader) -> Path | None:
    """:func:`record_novelty` for a torch :class:`~graft.artifacts.model.GraftModel` (fine-tuning):
    runs it over the un-augmented ``train_loader`` and ``val_loader`` (batches of (images, labels))."""
    import torch

    def run(loader):
        features, logits, labels = [], [], []
        with torch.inference_mode():
            for batch in loader:
                pooled = model.features(batch[0])
                features.append(pooled.float().numpy())
                logits.append(model.head(pooled).float().numpy())
                labels.append(np.asarray(batch[1]) if torch.is_tensor(batch[1]) else None)
        usable = all(part is not None for part in labels)
        return np.concatenate(features), np.concatenate(logits), np.concatenate(labels) if usable else None

    model.eval()
    train_features, _, train_labels = run(train_loader)
    val_features, val_logits, _ = run(val_loader)
    slices = getattr(model.head, "slices", None)
    slices = [(s.start, s.stop) for s in slices.values()] if slices else None
    labels = train_labels if slices is None else None
    return record_novelty(model_dir, NoveltyData(train_features, labels, val_features, val_logits, slices))


def energy_score(logits: np.ndarray, slices) -> np.ndarray:
    """-logsumexp over each task's logits, averaged over tasks: (N, C) -> (N,)."""
    logits = np.asarray(logits, np.float64)
    total = np.zeros(len(logits))
    for start, stop in slices:
        part = logits[:, start:stop]
        top = part.max(axis=1)
        total -= top + np.log(np.exp(part - top[:, None]).sum(axis=1))
    return total / len(slices)


def _tail_p(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """P(reference >= value), interpolated linearly between the sorted reference values (from
    n / (n + 1) at the lowest to 1 / (n + 1) at the highest), so that a tiny change of a score
    never jumps a whole step; past the highest it keeps falling as
    exp(-(value - highest) / spread) / (n + 1), so far-off inputs still rank."""
    n = len(reference)
    position = np.interp(values, reference, np.arange(n, dtype=np.float64))
    p = (n - position) / (n + 1.0)
    spread = max(float(reference[-1] - reference[n // 2]), 1e-6)  # top half's range
    beyond = values > reference[-1]
    p[beyond] = np.exp(-(values[beyond] - reference[-1]) / spread) / (n + 1.0)
    return np.maximum(p, 1e-300)


def _standardised(features, mean, scale) -> np.ndarray:
    return _unit_rows((np.asarray(features, np.float32) - mean) / scale)


def _unit_rows(a: np.ndarray) -> np.ndarray:
    return (a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)).astype(np.float32)
