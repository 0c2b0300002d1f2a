"""Projects under the app's root: the root guard, the candidates, a project's data at a glance.

A project is a folder of class folders (``PROJECT/<class>/<image>``, what ``graft fit`` reads).
What the app writes for it lives beside it, in ``.graft-app/<project name>/`` of the folder
holding the project (hidden; graft writes no output inside the data it reads): ``runs/`` (graft
run folders, one per Train), ``app/`` (each run's log and pid) and ``exclude.csv`` (the audit's
decisions). No photo is ever moved or deleted.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from graft.data.folders import _files_under, is_hidden
from graft.errors import GraftError

APP_FOLDER = ".graft-app"  # beside the projects: hidden, so no scan reads it as a project or a class
THUMBNAILS = 4  # per class on the data page
MAX_NAME = 100  # bytes of a class name or an added file's stem: the system's limit is 255 with the suffix and -N


class AppError(GraftError):
    """Bad input in the page: one line, shown on the page (``status`` is the HTTP status)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def under_root(root: Path, given: str | None) -> Path:
    """``given`` (relative to ``root`` or absolute) resolved, symlinks followed; AppError when it
    leaves ``root`` or does not exist."""
    if not given:
        return root
    try:  # a NUL byte or a name too long for the system: the page's mistake, not a crash
        path = Path(os.path.expanduser(given))
        path = (path if path.is_absolute() else root / path).resolve()
        path.exists()
    except (ValueError, OSError) as exc:
        raise AppError(f"{given!r} cannot be a path here: {exc}") from None
    if path != root and root not in path.parents:
        raise AppError(f"{given} is outside the folder graft app was started in ({root}): choose a folder "
                       "inside it, or start graft app with --root", 403)
    if not path.exists():
        raise AppError(f"{given} does not exist under {root}", 404)
    return path


def relative(root: Path, path: Path) -> str:
    """``path`` as the page names it: relative to ``root`` ("." for the root itself)."""
    return path.relative_to(root).as_posix() or "."


def class_folders(folder: Path) -> list[Path]:
    try:
        return sorted(e for e in folder.iterdir() if e.is_dir() and not is_hidden(e.name))
    except OSError:
        return []


def candidates(root: Path, depth: int = 3) -> list[Path]:
    """Folders under ``root`` (``depth`` levels down; not the root itself) that look like projects:
    two or more class folders, and no folder inside a project's classes."""
    found, stack = [], [(root, 0)]
    while stack:
        folder, level = stack.pop()
        subs = class_folders(folder)
        if folder != root and len(subs) >= 2 and all(_has_files(s) for s in subs[:2]):
            found.append(folder)
            continue
        if level < depth:
            stack.extend((s, level + 1) for s in reversed(subs))
    return sorted(found)


def _has_files(folder: Path) -> bool:
    try:
        return any(not e.is_dir() and not is_hidden(e.name) for e in folder.iterdir()) or \
            any(e.is_dir() for e in folder.iterdir())
    except OSError:
        return False


@dataclass
class ClassSummary:
    name: str
    count: int
    samples: list[Path] = field(default_factory=list)


@dataclass
class ProjectData:
    """A project's classes with their image counts and a few files each; ``problems``: one line
    each for what stops training (an empty class, fewer than two classes)."""

    path: Path
    classes: list[ClassSummary]
    problems: list[str]

    @property
    def total(self) -> int:
        return sum(c.count for c in self.classes)


def project_data(path: Path) -> ProjectData:
    """Count the files of each class folder (no image is decoded here: training says which
    files it skipped)."""
    if not path.is_dir():
        raise AppError(f"{path} is a file, not a project folder")
    classes = []
    for folder in class_folders(path):
        files = _files_under(folder)
        classes.append(ClassSummary(folder.name, len(files), files[:THUMBNAILS]))
    problems = [f"class '{c.name}' has no images: add some, or remove its folder, before training"
                for c in classes if c.count == 0]
    if len(classes) < 2:
        problems.append(f"{path.name} has {len(classes)} class folder(s): a project needs a folder per class, "
                        "at least two")
    return ProjectData(path, classes, problems)


def state_folder(project: Path, *parts: str) -> Path:
    """``.graft-app/<project name>/<parts>`` beside the project (not created)."""
    return project.parent.joinpath(APP_FOLDER, project.name, *parts)


def app_folder(project: Path, *parts: str) -> Path:
    """:func:`state_folder`, created."""
    folder = state_folder(project, *parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def add_photos(project: Path, class_name: str, uploads: list[tuple[str, bytes]]) -> tuple[list[str], list[str]]:
    """Copy uploaded photos into ``PROJECT/<class_name>/`` (a new class folder when the name is new);
    returns (names written, one line per file refused). Each file is decoded by graft's rules
    first: a file that is not an image graft reads is refused and nothing of it is written; a
    name already taken gets ``-1``, ``-2``... (no photo is replaced)."""
    from graft.data.decode import load_image

    name = class_name.strip()
    if not name or name.startswith(".") or "/" in name or "\\" in name or name in ("..", APP_FOLDER) or \
            not name.isprintable() or len(name.encode()) > MAX_NAME:
        raise AppError(f"{class_name[:MAX_NAME]!r} cannot be a class name: use letters, digits, spaces or dashes "
                       f"(at most {MAX_NAME} characters)")
    folder = project / name
    if folder.exists() and not folder.is_dir():
        raise AppError(f"{folder} is a file, not a class folder")
    if folder.is_symlink() and folder.resolve().parent != project.resolve():  # writes go under the root only
        raise AppError(f"class '{name}' is a link to {folder.resolve()}, outside the project: add its photos there")
    written, refused = [], []
    for filename, content in uploads:
        base = Path(filename or "photo").name
        try:
            load_image(content, name=base)
        except GraftError as exc:
            refused.append(f"{base} was not added: {str(exc).removeprefix(f'{base}: ')}")
            continue
        stem = _printable(Path(base).stem, MAX_NAME).lstrip(".") or "photo"
        suffix = _printable(Path(base).suffix, 16) or ".jpg"
        target, n = folder / f"{stem}{suffix}", 0
        while target.exists():
            n += 1
            target = folder / f"{stem}-{n}{suffix}"
        folder.mkdir(exist_ok=True)
        target.write_bytes(content)
        written.append(target.name)
    return written, refused


def _printable(text: str, most: int) -> str:
    """A part of a browser's file name made safe to write: control and invisible characters (a
    newline, a right-to-left override that disguises the suffix) replaced, cut to ``most`` bytes."""
    return "".join(c if c.isprintable() else "_" for c in text).encode()[:most].decode(errors="ignore")
