"""The audit on the data page: graft audit's findings in plain words, and the person's decisions.

Findings are read from the newest finished audit run folder (``RUN/audit.csv``, written by the
recipe registry's ``audit`` in a child process, see :mod:`graft.app.training`). A decision
("leave this photo out", "it is really a <class>") is one row of ``STATE/exclude.csv``
(``path,relabel,issue``), the CSV ``graft fit --exclude`` reads: every later Train takes it. No
photo is moved, changed or deleted; undoing a decision removes its row.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from graft._io.files import write_atomic
from graft.app import training
from graft.app.projects import AppError, state_folder

COLUMNS = ("path", "relabel", "issue")
SHOWN = 60  # findings listed on the page (the rest are in the audit's report.html)


def _words(row: dict) -> str:
    """One finding as a person would say it."""
    other = f"{row.get('other_given')}/{Path(row.get('other_path') or '').name}"
    elsewhere = ", in another class" if "another class" in (row.get("detail") or "") else ""
    words = {
        "label": f"Labelled {row['given']}, but looks like {row['suggested']}",
        "duplicate": f"The same photo as {other}{elsewhere}",
        "near-duplicate": f"Almost the same photo as {other}{elsewhere}",
        "leak": f"The same photo as {other} in {row.get('other_split')}",
        "outlier": "Unlike every other photo: is it in the right project?",
        "tiny": f"Very small ({row.get('score')} px): little to learn from",
        "extreme-aspect": "Very long or very wide",
        "imbalance": f"Few photos in class {row.get('given')} compared with the others",
        "unreadable": f"Cannot be read: {row.get('detail')}",
    }
    return words.get(row["issue"], f"{row['issue']}: {row.get('detail', '')}")


def decisions_file(project: Path) -> Path:
    return state_folder(project, "exclude.csv")


def read_decisions(project: Path) -> dict[str, dict]:
    """path -> its decision row, from STATE/exclude.csv (empty when there is none)."""
    path = decisions_file(project)
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["path"]: row for row in csv.DictReader(handle) if row.get("path")}


def _write(project: Path, rows: dict[str, dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows.values())
    state_folder(project).mkdir(parents=True, exist_ok=True)
    write_atomic(decisions_file(project), buffer.getvalue())


def findings(project: Path) -> tuple[list[dict], int, Path | None]:
    """The newest finished audit's findings (at most :data:`SHOWN`, each with ``words`` and its
    ``decision`` or None), how many there are in all, and the audit's run folder."""
    audits = [training.run_dir(project, n) for n in training.runs(project, "audit")]
    done = [a for a in audits if (a / "audit.csv").exists()]
    if not done:
        return [], 0, None
    with open(done[-1] / "audit.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    decided = read_decisions(project)
    for row in rows:
        row["words"] = _words(row)
        row["decision"] = decided.get(row["path"])
        row["image"] = row["issue"] != "imbalance"
    return rows[:SHOWN], len(rows), done[-1]


def decide(project: Path, path: str, relabel: str = "", issue: str = "") -> dict:
    """Record "leave ``path`` out" (or, with ``relabel``, "``path`` is a ``relabel``"); the row.
    AppError for a path that is not a photo of the project or a class it does not have."""
    try:  # a NUL byte or an over-long name: not a photo either
        target = Path(path).resolve()
        photo = project.resolve() in target.parents and target.is_file()
    except (ValueError, OSError):
        photo = False
    if not photo:
        raise AppError(f"{path!r} is not a photo of {project.name}")
    classes = sorted(p.name for p in project.iterdir() if p.is_dir() and not p.name.startswith("."))
    if relabel and relabel not in classes:
        raise AppError(f"{relabel!r} is not a class of {project.name} ({', '.join(classes)})")
    rows = read_decisions(project)
    rows[path] = {"path": path, "relabel": relabel, "issue": issue}
    _write(project, rows)
    return rows[path]


def undo(project: Path, path: str) -> None:
    """Forget the decision about ``path`` (nothing to forget is fine)."""
    rows = read_decisions(project)
    if rows.pop(path, None) is not None:
        _write(project, rows)
