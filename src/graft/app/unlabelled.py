"""Photos without a label on the data page: graft select's "label these next" and graft cluster's
groups to name; one click files a photo (or a whole group) into a class.

The pool is a folder of photos under the root (default: ``<project>-unlabelled`` beside the
project). ``graft select POOL -n N --labelled PROJECT`` runs as a job (:mod:`graft.app.training`,
kind "select"); its picks are read from ``RUN/selected.csv``. Filing a pick copies it into the
class folder (:func:`graft.app.projects.add_photos`): the pool is never changed.
"""
from __future__ import annotations

import csv
from pathlib import Path

from graft.app import training
from graft.app.projects import AppError, _files_under, add_photos, app_folder, state_folder

PICKS = 12  # photos asked for at a time: a page of them


def default_pool(project: Path) -> Path:
    return project.parent / f"{project.name}-unlabelled"


def start(project: Path, pool: Path, kind: str = "select") -> str:
    """Ask graft select for the next photos to label from ``pool`` (``kind`` "cluster": graft
    cluster to group them); the job's name."""
    if not pool.is_dir():
        raise AppError(f"{pool.name} is not a folder of photos")
    if project.resolve() in (pool.resolve(), *pool.resolve().parents):
        raise AppError(f"{pool.name} is inside the project: the photos without a label go in a folder of their own")
    if pool.resolve() in project.resolve().parents:  # graft would refuse it in CLI words (-o inside DIR)
        raise AppError(f"{pool.name or pool} holds the project itself: the photos without a label go in a folder of "
                       "their own, beside the project")
    files = len(_files_under(pool))
    if files == 0:
        raise AppError(f"{pool} has no photos")
    extra = (str(pool), str(min(PICKS, files))) if kind == "select" else (str(pool),)
    return training.start(project, kind=kind, extra=extra)


def picks(project: Path) -> tuple[list[str], Path | None]:
    """The newest finished selection's photos, in the order to label them, less those filed
    into the project since; and its run folder."""
    runs = [training.run_dir(project, n) for n in training.runs(project, "select")]
    done = [r for r in runs if (r / "selected.csv").exists()]
    if not done:
        return [], None
    with open(done[-1] / "selected.csv", newline="", encoding="utf-8") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: int(row["rank"]))
    filed = _filed(project)
    return [row["path"] for row in rows if row["path"] not in filed], done[-1]


def _filed(project: Path) -> set[str]:
    log = state_folder(project, "filed.txt")
    return set(log.read_text().splitlines()) if log.exists() else set()


def file_photo(project: Path, root: Path, path: str, class_name: str) -> str:
    """Copy the pool photo ``path`` into ``PROJECT/<class_name>/``; the name written."""
    try:  # a NUL byte or an over-long name: not a photo either
        source = Path(path).resolve()
        photo = root in source.parents and source.is_file()
    except (ValueError, OSError):
        photo = False
    if not photo:
        raise AppError(f"{path!r} is not a photo under {root}")
    written, refused = add_photos(project, class_name, [(source.name, source.read_bytes())])
    if refused:
        raise AppError(refused[0])
    log = app_folder(project) / "filed.txt"
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(path + "\n")
    return written[0]


def groups(project: Path, shown: int = 6) -> list[dict]:
    """The newest finished clustering's groups not filed yet, largest first: ``{"cluster", "paths"
    (most typical first), "shown" (the first ``shown``)}``."""
    runs = [training.run_dir(project, n) for n in training.runs(project, "cluster")]
    done = [r for r in runs if (r / "clusters.csv").exists()]
    if not done:
        return []
    with open(done[-1] / "clusters.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    filed, found = _filed(project), {}
    for row in sorted(rows, key=lambda row: int(row["rank"])):
        if row["path"] not in filed:
            found.setdefault(row["cluster"], []).append(row["path"])
    return [{"cluster": c, "paths": paths, "shown": paths[:shown]}
            for c, paths in sorted(found.items(), key=lambda item: -len(item[1]))]


def file_group(project: Path, root: Path, cluster: str, class_name: str) -> tuple[int, list[str]]:
    """Copy every photo of group ``cluster`` into ``PROJECT/<class_name>/``; (copied, refused lines)."""
    group = next((g for g in groups(project) if g["cluster"] == cluster), None)
    if group is None:
        raise AppError(f"there is no group {cluster} left to name")
    copied, refused = 0, []
    for path in group["paths"]:
        try:
            file_photo(project, root, path, class_name)
            copied += 1
        except AppError as exc:
            refused.append(str(exc))
    return copied, refused
