"""Few-shot evaluation: N-way K-shot episodes on frozen features.

Each episode draws N classes, K labelled "support" images and Q "query" images of each; a
head is fitted on the support set alone and scored on the queries. The features are extracted
once (through graft's cache), so a sweep over shots and heads costs seconds after the first
extraction.

Heads:
* ``prototype`` -- nearest class mean, with SimpleShot's transform (Wang et al. 2019): subtract
  the mean feature, then L2-normalise. Without labelled base classes to take the mean from,
  the mean is over every image of the folder (no labels are used for it).
* ``logreg`` -- logistic regression on the same transformed support features.

The result is the mean accuracy over episodes with a 95 % interval (1.96 standard errors).
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np

from graft.errors import DataError, GraftError
from graft.recipes.settings import FewshotConfig, comma_list

FEWSHOT_HEADS = ("prototype", "logreg")


@dataclass
class FewShotResult:
    ways: int
    shots: int
    head: str
    episodes: int
    queries: int
    mean: float
    interval: float  # half-width of the 95 % interval

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        return (f"{self.ways}-way {self.shots}-shot {self.head:9s} {100 * self.mean:5.1f} % +- "
                f"{100 * self.interval:.1f} ({self.episodes} episodes, {self.queries} queries per class)")


def simpleshot_transform(features: np.ndarray, mean: np.ndarray) -> np.ndarray:
    centred = np.asarray(features, np.float64) - mean
    return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)


def _episode_accuracy(head: str, support, support_labels, query, query_labels) -> float:
    if head == "prototype":
        classes = np.unique(support_labels)
        prototypes = np.stack([support[support_labels == c].mean(0) for c in classes])
        predicted = classes[np.argmin(((query[:, None, :] - prototypes[None]) ** 2).sum(-1), axis=1)]
    elif head == "logreg":
        from sklearn.linear_model import LogisticRegression

        predicted = LogisticRegression(C=10.0, max_iter=1000).fit(support, support_labels).predict(query)
    else:
        raise GraftError(f"unknown few-shot head {head!r}: {', '.join(FEWSHOT_HEADS)}")
    return float((predicted == query_labels).mean())


def check_episode_sizes(labels: np.ndarray, classes: list[str], ways: int, shots, queries: int) -> None:
    counts = np.bincount(labels, minlength=len(classes))
    if ways < 2 or ways > len(classes):
        raise DataError(f"--ways {ways}: the folder has {len(classes)} classes (need 2 <= ways <= classes)")
    smallest = int(counts.min())
    largest_shot = max(shots)
    if largest_shot + 1 > smallest:
        name = classes[int(counts.argmin())]
        raise DataError(f"--shots {largest_shot} is too large: class '{name}' has {smallest} image(s), and an "
                        f"episode needs {largest_shot} support + at least 1 query image per class")
    if queries < 1:
        raise DataError(f"--queries must be at least 1, got {queries}")


def draw_episodes(labels: np.ndarray, ways: int, shots: int, episodes: int, queries: int, seed: int = 0,
                  support_slots: int | None = None):
    """Yield ``(support, query)`` index arrays of ``episodes`` seeded N-way episodes.

    Each class drawn is shuffled once; its first ``support_slots`` (default ``shots``) images
    are kept for support, of which the first ``shots`` are used, and the next ``queries`` are
    its queries. The draws do not depend on ``shots``: runs with the same ``support_slots`` and
    seed score every shot count on the same query images. Every class has ``queries`` queries:
    pass at most the smallest class's images minus ``support_slots`` (see :func:`usable_queries`).
    """
    labels = np.asarray(labels)
    slots = shots if support_slots is None else support_slots
    if slots < shots:
        raise GraftError(f"support_slots {slots} is smaller than shots {shots}")
    if queries < 1:
        raise DataError(f"no query images are left after {slots} support images in the smallest class")
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    eligible = [c for c, members in by_class.items() if len(members) >= slots + queries]
    if len(eligible) < ways:
        raise DataError(f"only {len(eligible)} class(es) have {slots} support + {queries} query images; "
                        f"{ways}-way episodes need {ways}")
    rng = np.random.default_rng(seed)
    for _ in range(episodes):
        chosen = rng.choice(eligible, size=ways, replace=False)
        shuffled = [rng.permutation(by_class[c]) for c in chosen]
        yield (np.concatenate([members[:shots] for members in shuffled]),
               np.concatenate([members[slots:slots + queries] for members in shuffled]))


def usable_queries(labels: np.ndarray, support_slots: int, queries: int) -> int:
    """Queries per class every class can give after ``support_slots`` support images: at most
    ``queries``, at least 1 when the smallest class has more images than support slots."""
    return max(0, min(queries, int(np.unique(np.asarray(labels), return_counts=True)[1].min()) - support_slots))


def run_episodes(features: np.ndarray, labels: np.ndarray, ways: int, shots: int, episodes: int,
                 queries: int = 15, head: str = "prototype", seed: int = 0) -> FewShotResult:
    """Mean accuracy of ``head`` over ``episodes`` random N-way K-shot episodes (seeded; see
    :func:`draw_episodes`). ``features``: [N, D]; ``labels``: [N] integers. ``queries`` is
    lowered to what the smallest class allows (:func:`usable_queries`); the result records it."""
    return _run_episodes(features, labels, ways, shots, episodes, queries, head, seed, shots)


def _run_episodes(features, labels, ways: int, shots: int, episodes: int, queries: int, head: str,  # noqa: PLR0913
                  seed: int, support_slots: int) -> FewShotResult:
    """:func:`run_episodes` with the queries drawn after ``support_slots`` support images, so
    that every K of one ``graft fewshot`` run scores the same query images."""
    labels = np.asarray(labels)
    queries = usable_queries(labels, support_slots, queries)  # the real count
    transformed = simpleshot_transform(features, np.asarray(features, np.float64).mean(0))
    accuracies = np.asarray([_episode_accuracy(head, transformed[s], labels[s], transformed[q], labels[q])
                             for s, q in draw_episodes(labels, ways, shots, episodes, queries, seed, support_slots)])
    interval = 1.96 * accuracies.std(ddof=1) / np.sqrt(len(accuracies)) if len(accuracies) > 1 else float("nan")
    return FewShotResult(ways, shots, head, episodes, queries, float(accuracies.mean()), float(interval))


def fewshot(config, *, progress: bool = True, **settings) -> list[FewShotResult]:
    """Episodes over a class-folder tree; returns one :class:`FewShotResult` per (shots, head).

    ``config``: a :class:`~graft.recipes.settings.FewshotConfig`, or the folder with its fields
    as keywords. Raises DataError when a class has too few images for ``shots + queries``."""
    from graft.data.folders import scan_folder
    from graft.data.overlap import duplicate_groups
    from graft.features.extractor import FeatureExtractor

    if not isinstance(config, FewshotConfig):
        config = FewshotConfig(data=config, **settings)
    data, ways, episodes, queries, seed = config.data, config.ways, config.episodes, config.queries, config.seed
    shots, heads = [int(k) for k in comma_list(config.shots) or []], comma_list(config.heads) or []
    if not shots:
        raise DataError("--shots names no number of shots")
    folder = scan_folder(data)
    copies = duplicate_groups(folder.paths)  # support and queries are drawn from one folder
    if copies:
        warnings.warn(f"{len(copies)} image(s) of {folder.root} have identical copies (same content), e.g. "
                      f"{copies[0][0]} = {copies[0][1]}: an episode can hold one copy as support and the other as a "
                      "query, so the accuracy will be optimistic", stacklevel=2)
    shots = sorted(set(int(k) for k in shots))
    if min(shots) < 1:
        raise DataError(f"--shots must be positive, got {min(shots)}")
    for head in heads:
        if head not in FEWSHOT_HEADS:
            raise GraftError(f"unknown few-shot head {head!r}: {', '.join(FEWSHOT_HEADS)}")
    check_episode_sizes(folder.labels, folder.classes, ways, shots, queries)
    extractor = FeatureExtractor(config.backbone, layer=config.layer, weights=config.weights,
                                 image_size=config.image_size, progress=progress).fit()
    found = extractor.extract_folder(folder)
    check_episode_sizes(found.labels, folder.classes, ways, shots, queries)  # after unreadable files are gone
    # Every row is scored on the same queries: support is drawn from the largest shot count's slots.
    used = usable_queries(found.labels, max(shots), queries)
    if used < queries:
        counts = np.bincount(found.labels, minlength=len(folder.classes))
        warnings.warn(f"--queries {queries}: class '{folder.classes[int(counts.argmin())]}' has {int(counts.min())} "
                      f"readable image(s), so every episode scores {used} queries per class after {max(shots)} "
                      "support images", stacklevel=2)
    return [_run_episodes(found.vectors, found.labels, ways, k, episodes, used, head, seed, max(shots))
            for k in shots for head in heads]
