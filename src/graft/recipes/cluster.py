"""``graft cluster``: self-taught clustering of a folder of images on frozen features.

Any folder: flat, nested, or class folders (whose labels are never used to cluster, only to
score: Hungarian-matched accuracy and NMI in metrics.json, beside k-means on the same
features). The clusters come from :class:`graft.clustering.ClusterHead` (SCAN's
neighbourhood consistency). Outputs: RUN/clusters.csv, metrics.json, config.yaml and
report.html (each cluster's most typical images first, its doubtful ones last); ``export``
lays the images out as class folders of links that ``graft fit`` reads.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import numpy as np

from graft.artifacts.run_folder import open_run
from graft.data.folders import scan_images
from graft.data.overlap import check_output_outside
from graft.errors import DataError, GraftError
from graft.recipes._run import FitResult, check_not_an_input
from graft.recipes._unlabelled import folder_features, write_csv, write_metrics, write_page
from graft.recipes.settings.unlabelled import ClusterConfig

__all__ = ["ClusterConfig", "cluster", "export_clusters"]

OVER_CLUSTER = 1.5  # without -k: the eigengap estimate times this (merging by eye beats splitting)
SHOWN = 12  # typical images shown per cluster; DOUBTFUL more at the end
DOUBTFUL = 6


def cluster(config, out, *, strict: bool = False, progress: bool = True, overwrite: bool = False,
            **settings) -> FitResult:
    """Group the images of an unlabelled folder by their frozen features, so that a person can
    name the groups (``export`` lays each group's images out as a class folder ``graft fit`` reads).

    Parameters
    ----------
    config : ClusterConfig or str
        The settings; or the folder of images (``data``),
        with the Config's fields as keywords (``settings``).
    out : str or pathlib.Path
        The run folder: new, empty, or an earlier run of this command (replaced).
    strict : bool, default False
        Stop at the first unreadable image (DataError) instead of skipping it with a warning.
    progress : bool, default True
        Show progress bars on stderr.
    overwrite : bool, default False
        Write into a folder that holds something else than an earlier run of this command
        (graft's own outputs are removed first; the user's other files stay).
    **settings
        Fields of :class:`~graft.recipes.settings.ClusterConfig`, when ``config`` is a folder.

    Returns
    -------
    FitResult
        The run folder and the metrics written to ``RUN/metrics.json`` (``.model`` loads the
        saved model).

    Raises
    ------
    GraftError
        A setting no run can use, or an output folder that is or lies inside an input folder;
        raised before the run folder is touched.
    DataError
        A folder without readable images, or ``k`` above the number of images.

    Notes
    -----
    ``config.k`` clusters, or an over-clustered eigengap estimate when ``k`` is None. Every check (the
    folder, ``k`` against the number of images, the export folder) runs before the run folder
    is opened.
    """
    start = time.perf_counter()
    config = config if isinstance(config, ClusterConfig) else ClusterConfig(data=config, **settings)
    folder = scan_images(config.data)
    if config.k is not None and config.k > len(folder):
        raise DataError(f"-k {config.k} is more clusters than {config.data} has images ({len(folder)})")
    if config.export is not None:
        check_export_folder(config.export, config.data, out)
    check_not_an_input(out, config)
    run = open_run(out, "cluster", overwrite=overwrite)
    with run.lock("cluster"):
        features = folder_features(config, folder, strict, progress)
        if len(features) < 2 or (config.k is not None and config.k > len(features)):
            raise DataError(f"{len(features)} readable images in {config.data}: too few for "
                            f"{config.k or 2} clusters")
        metrics = _cluster(run, config, features, start)
    return FitResult(run.path, metrics)


def _cluster(run, config: ClusterConfig, features, start: float) -> dict:
    from graft.clustering import ClusterHead, cluster_scores, estimate_clusters, kmeans_clusters, typicality

    began, run_dir = time.perf_counter(), run.path
    X = features.vectors
    if config.k is None:
        estimate = estimate_clusters(X, config.seed)
        k, how = min(len(X), max(2, math.ceil(OVER_CLUSTER * estimate))), f"estimated {estimate}, x {OVER_CLUSTER}"
    else:
        k, how = config.k, "given (-k)"
    head = ClusterHead(k, n_heads=config.heads, random_state=config.seed).fit(X)
    seconds = time.perf_counter() - began
    clusters, confidence = head.labels_, head.probabilities_.max(1)
    typical = typicality(head.projection_.transform(X), clusters)
    metrics = {"n_images": len(features), "k": k, "k_chosen": how, "over_clustered": config.k is None,
               "sizes": np.bincount(clusters, minlength=k).tolist(),
               "head_loss": round(float(head.head_losses_.min()), 4),
               "cluster_seconds": round(seconds, 3), "features_cached": features.cached}
    truth = None
    if features.classes:
        truth = features.labels
        metrics.update(cluster_scores(truth, clusters))
        baseline = cluster_scores(truth, kmeans_clusters(X, k, config.seed, head.projection_))
        metrics.update({"kmeans_accuracy": baseline["accuracy"], "kmeans_nmi": baseline["nmi"],
                        "classes": features.classes})
    rank = _ranks(clusters, typical)
    rows = [[path, int(c), round(float(p), 4), round(float(t), 4), int(r)] +
            ([features.classes[truth[i]]] if truth is not None else [])
            for i, (path, c, p, t, r) in enumerate(zip(features.paths, clusters, confidence, typical, rank))]
    columns = ["path", "cluster", "confidence", "typicality", "rank"] + (["class"] if truth is not None else [])
    write_csv(run_dir / "clusters.csv", columns, rows)
    if config.export is not None:
        metrics["export"] = str(export_clusters(config.export, features.paths, clusters))
    metrics.update({"skipped": features.skipped, "seconds": round(time.perf_counter() - start, 3)})
    write_metrics(run_dir, metrics)
    run.write_config({"command": "cluster", **config.to_dict()})
    write_page(run_dir, f"{Path(config.data).name}: {k} clusters", _summary_rows(metrics),
               _groups(features.paths, clusters, confidence, typical, truth, features.classes))
    return {**metrics, "summary": _summary_text(run_dir, metrics)}


def _ranks(clusters: np.ndarray, typical: np.ndarray) -> np.ndarray:
    """Each image's place in its cluster, most typical first (1 = the cluster's most typical)."""
    rank = np.zeros(len(clusters), dtype=np.int64)
    for c in np.unique(clusters):
        members = np.flatnonzero(clusters == c)
        rank[members[np.argsort(-typical[members], kind="stable")]] = np.arange(1, len(members) + 1)
    return rank


def _groups(paths, clusters, confidence, typical, truth, classes) -> list[dict]:
    groups = []
    sizes = np.bincount(clusters)
    for c in sorted(np.unique(clusters), key=lambda c: -sizes[c]):
        members = np.flatnonzero(clusters == c)
        by_typical = members[np.argsort(-typical[members], kind="stable")]
        shown = by_typical[:SHOWN]
        rest = np.setdiff1d(members, shown)
        doubtful = rest[np.argsort(confidence[rest], kind="stable")][:DOUBTFUL]

        def caption(i):
            return f"{confidence[i]:.2f}" + (f" {classes[truth[i]]}" if truth is not None else "")

        title = f"cluster {c}: {len(members)} images"
        if truth is not None:  # class folders: what the cluster mostly holds, to check the page by eye
            common = np.bincount(truth[members]).argmax()
            title += f", {np.mean(truth[members] == common):.0%} {classes[common]}"
        groups.append({"title": title,
                       "note": "most typical first; the number is how sure the head is",
                       "images": [(paths[i], caption(i)) for i in shown],
                       "doubtful": [(paths[i], caption(i)) for i in doubtful]})
    return groups


def _summary_rows(metrics: dict) -> list[tuple[str, object]]:
    rows = [("images", metrics["n_images"]), ("clusters", f"{metrics['k']} ({metrics['k_chosen']})")]
    if "accuracy" in metrics:
        rows += [("accuracy (Hungarian)", metrics["accuracy"]), ("NMI", metrics["nmi"]),
                 ("k-means on the same features", f"accuracy {metrics['kmeans_accuracy']}, "
                                                  f"NMI {metrics['kmeans_nmi']}")]
    return rows + [("seconds (clustering / all)", f"{metrics['cluster_seconds']} / {metrics['seconds']}"),
                   ("skipped", len(metrics["skipped"]))]


def _summary_text(run_dir: Path, metrics: dict) -> str:
    lines = [f"{metrics['n_images']} images in {metrics['k']} clusters ({metrics['k_chosen']}"
             + ("; over-clustered on purpose: merge clusters that show the same thing" if metrics["over_clustered"]
                else "") + f"), sizes {metrics['sizes']}"]
    if "accuracy" in metrics:
        lines.append(f"against the class folders: accuracy {metrics['accuracy']:.4f}  NMI {metrics['nmi']:.4f}  "
                     f"(k-means {metrics['kmeans_accuracy']:.4f} / {metrics['kmeans_nmi']:.4f})")
    lines.append(f"{metrics['cluster_seconds']:.1f} s clustering, {metrics['seconds']:.1f} s in all, "
                 f"skipped {len(metrics['skipped'])}")
    if "export" in metrics:
        lines.append(f"class folders for `graft fit`: {metrics['export']}")
    lines.append(f"wrote {run_dir}/: clusters.csv metrics.json report.html config.yaml")
    return "\n".join(lines)


def check_export_folder(export, data, out=None) -> None:
    """--export must be a new or empty folder outside DIR and apart from the run folder ``out``
    (GraftError naming it otherwise)."""
    path = Path(export)
    check_output_outside(path, {"DIR folder": data}, named="--export", remedy="choose another --export")
    if out is not None:
        # the run folder need not exist yet, so compare the resolved paths, not the folders:
        # class folders inside the run (or the run inside them) would be replaced with it or read as a class
        target, run = (Path(os.path.realpath(os.path.expanduser(os.fspath(p)))) for p in (path, out))
        if target == run or run in target.parents or target in run.parents:
            raise GraftError(f"--export {path} and -o {out} overlap: the class folders and the run folder must be "
                             "apart (a re-run would replace the export, or fit would read the run as a class); "
                             "choose another --export")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise GraftError(f"--export {path} is not a new or empty folder: graft writes class folders only into "
                         "an empty one (it never mixes them with other files)")


def export_clusters(folder, paths: list[str], clusters: np.ndarray) -> Path:
    """Lay ``paths`` out as ``folder/cluster_NN/<name>`` symbolic links to the originals (copies
    where the system refuses links); the originals are never moved or changed. A name that
    repeats within a cluster gets a numbered prefix. Returns ``folder``."""
    folder = Path(folder)
    width = len(str(int(clusters.max())))
    used: set[Path] = set()
    for path, c in zip(paths, clusters):
        target_dir = folder / f"cluster_{int(c):0{width}d}"
        target_dir.mkdir(parents=True, exist_ok=True)
        target, n = target_dir / Path(path).name, 1
        while target in used:
            target, n = target_dir / f"{n}-{Path(path).name}", n + 1
        used.add(target)
        try:
            os.symlink(os.path.abspath(path), target)
        except OSError:  # no symlinks here (some Windows and network file systems): a copy
            shutil.copy2(path, target)
    return folder
