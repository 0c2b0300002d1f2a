"""``graft select``: which images of a pool to label next, on frozen features.

Without labels, typical and diverse images first (TypiClust, :func:`graft.clustering.select_typical`);
with ``--labelled`` class folders, the images their labels do not cover yet
(:func:`graft.clustering.select_next`). Pool images that are also among the labelled ones (the
same file, through a link or not, or a byte copy: one warning) are never picked. Outputs:
RUN/selected.csv (``path,rank,...``), metrics.json, config.yaml and report.html (a contact sheet
of the picks, in order).
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

from graft.artifacts.run_folder import open_run
from graft.data.folders import scan_folder, scan_unlabelled
from graft.data.overlap import shared_images
from graft.errors import DataError
from graft.recipes._run import FitResult, check_not_an_input
from graft.recipes._unlabelled import folder_features, write_csv, write_metrics, write_page
from graft.recipes.settings.unlabelled import SelectConfig

__all__ = ["SelectConfig", "select", "selected_paths"]


def select(config, out, *, strict: bool = False, progress: bool = True, overwrite: bool = False,
           **settings) -> FitResult:
    """Active learning: pick the ``config.n`` images of an unlabelled pool that are most worth
    labelling next, and write the picks into ``out``.

    Parameters
    ----------
    config : SelectConfig or str
        The settings; or the pool folder,
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
        Fields of :class:`~graft.recipes.settings.SelectConfig`, when ``config`` is a folder.

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
        A pool without readable images, or ``n`` above the images not labelled yet.

    Notes
    -----
    Images whose content equals a labelled image (``config.labelled``) are left out of the
    picks. The pool, ``n`` against its size and the labelled folder are checked before the run
    folder is opened.
    """
    start = time.perf_counter()
    config = config if isinstance(config, SelectConfig) else SelectConfig(pool=config, **settings)
    pool = scan_unlabelled(config.pool, "select needs images to pick from")
    labelled = scan_folder(config.labelled) if config.labelled is not None else None
    if labelled is not None:
        pool = _without_labelled(pool, labelled)
    if config.n > len(pool):
        raise DataError(f"-n {config.n} is more than the {len(pool)} images of {config.pool}"
                        + (" not labelled yet" if labelled is not None else "") + ": ask for fewer")
    check_not_an_input(out, config)
    run = open_run(out, "select", overwrite=overwrite)
    with run.lock("select"):
        features = folder_features(config, pool, strict, progress)
        if config.n > len(features):
            raise DataError(f"-n {config.n} is more than the {len(features)} readable images of {config.pool}")
        known = folder_features(config, labelled, strict, progress) if labelled is not None else None
        metrics = _select(run, config, features, known, start)
    return FitResult(run.path, metrics)


def _without_labelled(pool, labelled):
    """The pool less its images that are labelled already by content: the same file, a link, or
    a byte copy (one warning for the copies: the count and an example)."""
    shared = shared_images(pool.paths, labelled.paths)
    copies = [(mine, theirs) for mine, theirs in shared if mine.resolve() != theirs.resolve()]
    if copies:
        warnings.warn(f"{len(copies)} image(s) of {pool.root} are byte copies of labelled images, e.g. "
                      f"{copies[0][0]} = {copies[0][1]}: left out of the picks", stacklevel=3)
    drop = {mine for mine, _ in shared}
    return pool.subset([i for i, p in enumerate(pool.paths) if p not in drop])


def _select(run, config: SelectConfig, features, known, start: float) -> dict:
    from graft.clustering import mean_pairwise_distance, select_next, select_typical

    began = time.perf_counter()
    if known is None:
        picked, how = select_typical(features.vectors, config.n, config.seed), "typical (cold start, TypiClust)"
    else:
        picked = select_next(features.vectors, config.n, known.vectors, known.labels, config.seed, config.strategy)
        how = f"{config.strategy}, given {len(known)} labelled images"
    seconds = time.perf_counter() - began
    paths = [features.paths[i] for i in picked]
    write_csv(run.path / "selected.csv", ["path", "rank"], [[p, r] for r, p in enumerate(paths, 1)])
    metrics = {"n_pool": len(features), "n_selected": len(paths), "strategy": how,
               "n_labelled": 0 if known is None else len(known),
               "diversity": round(mean_pairwise_distance(features.vectors[picked]), 4),
               "pool_diversity": round(mean_pairwise_distance(features.vectors), 4),
               "select_seconds": round(seconds, 3), "features_cached": features.cached, "skipped": features.skipped,
               "seconds": round(time.perf_counter() - start, 3)}
    write_metrics(run.path, metrics)
    run.write_config({"command": "select", **config.to_dict()})
    write_page(run.path, f"{Path(config.pool).name}: {len(paths)} images to label next",
               [("pool images", metrics["n_pool"]), ("picked", f"{len(paths)} ({how})"),
                ("mean feature distance, picked / pool", f"{metrics['diversity']} / {metrics['pool_diversity']}")],
               [{"title": "In the order to label them", "note": "rank, then file name",
                 "images": [(p, f"#{r}") for r, p in enumerate(paths, 1)]}])
    summary = (f"picked {len(paths)} of {len(features)} images ({how}) in {seconds:.1f} s "
               f"({metrics['seconds']:.1f} s in all); mean feature distance {metrics['diversity']:.3f} "
               f"(pool {metrics['pool_diversity']:.3f})\nwrote {run.path}/: selected.csv metrics.json report.html "
               "config.yaml")
    return {**metrics, "summary": summary}


def selected_paths(run_dir) -> list[str]:
    """The picked paths of a select run, in rank order (RUN/selected.csv)."""
    import csv

    with open(Path(run_dir) / "selected.csv", newline="") as handle:
        return [row["path"] for row in sorted(csv.DictReader(handle), key=lambda row: int(row["rank"]))]

