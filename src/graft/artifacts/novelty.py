"""How unlike the training images an input is: a novelty score and an "unfamiliar" flag.

Two scores see different failures, so both are used and combined:

* **feature distance**: cosine distance of the pooled feature to its k-th nearest training
  feature (k = 10; Sun et al. 2022, "Out-of-distribution detection with deep nearest
  neighbors"). It flags images far from everything seen (grey squares, noise, digits), which a
  classifier may still score with confidence.
* **energy**: ``-logsumexp(logits)`` (Liu et al. 2020, "Energy-based out-of-distribution
  detection"), per task for a multi-task model and averaged. It flags images near the training
  data that no class fits well (a flower for an ants/bees model), which the distance misses.

Each score is turned into a tail p-value against the validation images (the fraction of them
scoring at least as high, with an exponential tail past the highest), and the two are combined
by Fisher's method: ``novelty = -ln p_distance - ln p_energy`` (0 for the most typical image,
about ``2 ln(n_val + 1)`` at the edge of the validation images, more beyond). The threshold is
set on the validation images' own novelty so that at most 5 % of them are above it.
BENCHMARKS.md has the AUROC of each score and the flag rates on far and near images.

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
FLAG_QUANTILE = 0.95
MIN_VALIDATION = 5  # fewer validation images give no usable threshold: no statistics are stored


@dataclass
class Novelty:
    """The statistics one model needs to score novelty at prediction time.

    ``bank``: (n_train, d) unit-length training features; ``distance_ref`` / ``energy_ref``:
    the validation images' scores, sorted; ``slices``: each task's logit columns (one for a
    single-task model); ``threshold``: novelty above it is unfamiliar.
    """

    bank: np.ndarray
    distance_ref: np.ndarray
    energy_ref: np.ndarray
    slices: list[tuple[int, int]]
    k: int
    threshold: float

    # -- scores -------------------------------------------------------------------------------
    def distance(self, features: np.ndarray) -> np.ndarray:
        """(N, d) pooled features -> (N,) cosine distance to the k-th nearest training feature."""
        units = _unit_rows(np.asarray(features, np.float32))
        similarity = units @ self.bank.T
        k = min(self.k, similarity.shape[1])
        kth = np.partition(similarity, similarity.shape[1] - k, axis=1)[:, similarity.shape[1] - k]
        return (1.0 - kth).astype(np.float64)

    def energy(self, logits: np.ndarray) -> np.ndarray:
        """(N, C) logits -> (N,) energy (higher: less like any class), averaged over tasks."""
        return energy_score(logits, self.slices)

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """(N,) novelty: Fisher's combination of the two scores' validation tail p-values."""
        return -np.log(_tail_p(self.distance_ref, self.distance(features))) \
            - np.log(_tail_p(self.energy_ref, self.energy(logits)))

    def judge(self, features: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(novelty (N,) float, unfamiliar (N,) bool)``."""
        novelty = self.score(features, logits)
        return novelty, novelty > self.threshold

    # -- persistence --------------------------------------------------------------------------
    def save(self, model_dir: str | Path) -> Path:
        from safetensors.numpy import save_file

        from graft._io.files import atomic_path

        path = Path(model_dir) / NOVELTY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": str(NOVELTY_FORMAT), "params": json.dumps(
            {"k": self.k, "threshold": self.threshold, "slices": self.slices, "score": SCORE_NAME})}
        tensors = {"bank": self.bank, "distance_ref": self.distance_ref.astype(np.float32),
                   "energy_ref": self.energy_ref.astype(np.float32)}
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
                tensors = {key: handle.get_tensor(key) for key in ("bank", "distance_ref", "energy_ref")}
            params = json.loads(meta["params"])
            if meta.get("format") != str(NOVELTY_FORMAT):
                raise ValueError(f"format {meta.get('format')!r}, this graft reads {NOVELTY_FORMAT}")
            return cls(tensors["bank"], tensors["distance_ref"].astype(np.float64),
                       tensors["energy_ref"].astype(np.float64), [tuple(s) for s in params["slices"]],
                       int(params["k"]), float(params["threshold"]))
        except Exception as exc:  # safetensors, JSON and key errors alike: one line naming the file
            raise ModelError(f"{path}: not readable novelty statistics ({type(exc).__name__}: {exc})") from None

    def describe(self) -> dict:
        """JSON-ready summary for a model's metadata."""
        return {"score": SCORE_NAME, "threshold": round(self.threshold, 4), "k": self.k,
                "n_train": int(self.bank.shape[0]), "n_val": int(self.distance_ref.shape[0]),
                "flag_rate_target": round(1 - FLAG_QUANTILE, 3)}


SCORE_NAME = "fisher(knn-cosine, energy)"


def fit_novelty(train_features: np.ndarray, val_features: np.ndarray, val_logits: np.ndarray,
                slices: list[tuple[int, int]] | None = None, k: int = NEIGHBOURS) -> Novelty | None:
    """Statistics from training features (N_train, d) and validation features (N_val, d) with
    the model's validation logits (N_val, C); None when there are fewer than 5 validation
    images. ``slices``: the (start, stop) logit columns of each task (default: all, one task)."""
    train_features = np.asarray(train_features, np.float32)
    val_features = np.asarray(val_features, np.float32)
    val_logits = np.asarray(val_logits, np.float32)
    if len(val_features) < MIN_VALIDATION or len(train_features) < 2:
        return None
    slices = [tuple(map(int, s)) for s in (slices or [(0, val_logits.shape[1])])]
    stats = Novelty(_unit_rows(train_features), np.zeros(0), np.zeros(0), slices, min(k, len(train_features)), 0.0)
    stats.distance_ref = np.sort(stats.distance(val_features))
    stats.energy_ref = np.sort(stats.energy(val_logits))
    own = np.sort(stats.score(val_features, val_logits))
    # the highest value that leaves at most (1 - FLAG_QUANTILE) of validation above it
    stats.threshold = float(own[len(own) - int(np.floor((1 - FLAG_QUANTILE) * len(own) + 1e-9)) - 1])
    return stats


def record_novelty(model_dir, train_features, val_features, val_logits, slices=None) -> Path | None:
    """Fit the statistics and write them into ``model_dir`` (the training recipes' one call);
    an older statistics file is removed when there is too little validation data for new ones."""
    stats = fit_novelty(train_features, val_features, val_logits, slices)
    if stats is None:
        (Path(model_dir) / NOVELTY_FILE).unlink(missing_ok=True)
        return None
    return stats.save(model_dir)


def record_novelty_of_network(model_dir, model, train_loader, val_loader) -> Path | None:
    """:func:`record_novelty` for a torch :class:`~graft.artifacts.model.GraftModel` (fine-tuning):
    runs it over the un-augmented ``train_loader`` and ``val_loader`` (batches of (images, labels))."""
    import torch

    def run(loader):
        features, logits = [], []
        with torch.inference_mode():
            for batch in loader:
                pooled = model.features(batch[0])
                features.append(pooled.float().numpy())
                logits.append(model.head(pooled).float().numpy())
        return np.concatenate(features), np.concatenate(logits)

    model.eval()
    train_features, _ = run(train_loader)
    val_features, val_logits = run(val_loader)
    slices = getattr(model.head, "slices", None)
    return record_novelty(model_dir, train_features, val_features, val_logits,
                          [(s.start, s.stop) for s in slices.values()] if slices else None)


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
    """P(reference >= value), smoothed as (count + 1) / (n + 1); past the highest reference
    value it keeps falling as exp(-(value - highest) / spread), so far-off inputs still rank."""
    n = len(reference)
    at_least = n - np.searchsorted(reference, values, side="left")
    p = (at_least + 1.0) / (n + 1.0)
    spread = max(float(reference[-1] - reference[n // 2]), 1e-6)  # top half's range
    beyond = values > reference[-1]
    p[beyond] = np.exp(-(values[beyond] - reference[-1]) / spread) / (n + 1.0)
    return np.maximum(p, 1e-300)


def _unit_rows(a: np.ndarray) -> np.ndarray:
    return (a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)).astype(np.float32)
