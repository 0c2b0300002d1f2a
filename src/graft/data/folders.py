"""Finding labelled images on disk: class-folder trees, splits, manifests.

A dataset is a class-per-folder tree, ``root/<class>/<image>``. Scanning lists every file
without opening it; decoding happens later, one image at a time, in :func:`load_image`, which
either returns a correct RGB image or raises :class:`ImageDecodeError` saying why. Files that
are not images are therefore listed here and reported (not silently dropped) when they fail
to decode.
"""
from __future__ import annotations

import os
import unicodedata
import warnings
from pathlib import Path

from graft.data.counting import counted
from graft.data.decode import load_image  # noqa: F401  (re-exported: scanning and decoding go together)
from graft.data.overlap import duplicate_groups, warn_duplicates  # noqa: F401  (duplicate_groups re-exported)
from graft.data.records import ImageFolder, Record  # noqa: F401  (re-exported: the scans' values)
from graft.data.splits import IMBALANCE_RATIO, stratified_split, take_per_class, warn_imbalance  # noqa: F401  (re-exported)
from graft.errors import DataError

# For information (e.g. a hint in a report): scanning does not filter on suffix.
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".dib", ".tif", ".tiff",
        ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".jp2", ".j2k", ".jpx",
        ".avif", ".heic", ".heif",
    }
)


# Folders and files that operating systems and tools leave beside data: macOS zip resource
# forks, Windows recycle bins and thumbnail caches, NAS indexes. Never classes, never images.
_SYSTEM_NAMES = frozenset({"__MACOSX", "$RECYCLE.BIN", "System Volume Information", "@eaDir", "lost+found",
                           "Thumbs.db", "ehthumbs.db", "desktop.ini", "Icon\r", "__pycache__"})


def is_hidden(name: str) -> bool:
    """Dot-files (.DS_Store, ._foo, .ipynb_checkpoints) and OS/tool metadata (__MACOSX, Thumbs.db)."""
    return name.startswith(".") or name in _SYSTEM_NAMES


_is_hidden = is_hidden  # the name other modules used before it was public


def _files_under(class_dir: Path) -> list[Path]:
    """Every non-hidden, non-directory entry below ``class_dir``, recursively, sorted.

    Broken symlinks and other non-regular entries are kept on purpose: they fail in
    load_image with a reason instead of vanishing from the dataset unnoticed.
    """
    found: list[Path] = []
    visited: set[str] = set()
    # followlinks so that symlinked sub-folders count; the realpath set stops symlink cycles.
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        found.extend(Path(dirpath, f) for f in filenames if not _is_hidden(f))
    return sorted(found)


def class_name(name) -> str:
    """A class or task name in the one Unicode form graft compares names in (NFC): macOS and
    AirDrop write decomposed names (NFD, "A" + combining diaeresis), most other tools composed
    ones, and Linux keeps both as different folders that look identical."""
    return unicodedata.normalize("NFC", str(name))


def _class_dirs(root_path: Path, class_dirs: list[Path]) -> dict[str, list[Path]]:
    """{class name (NFC): its folders}: two folders whose names differ only in Unicode form are
    one class (with a warning), not two classes that look the same."""
    by_name: dict[str, list[Path]] = {}
    for folder in class_dirs:
        by_name.setdefault(class_name(folder.name), []).append(folder)
    for name, folders in by_name.items():
        if len(folders) > 1:
            warnings.warn(f"{len(folders)} folders in {root_path} are named {name!r} in different Unicode forms "
                          "(composed NFC / decomposed NFD): read as one class", stacklevel=3)
    return dict(sorted(by_name.items()))


def scan_folder(root, classes: list[str] | None = None) -> ImageFolder:
    """List the images of a ``root/<class>/<image>`` tree (images may be nested deeper).

    Parameters
    ----------
    root : str or os.PathLike
        The folder; class names are compared in NFC (:func:`class_name`).
    classes : list of str, optional
        Scan against these classes (a validation folder against the training classes): labels
        are positions in the list, every sub-folder must be one of them, a class may be absent
        or empty (see :func:`warn_unscored_classes`). Default: the sorted sub-folder names,
        at least two.

    Returns
    -------
    ImageFolder

    Raises
    ------
    DataError
        Naming the folder and the problem (missing, no class folders, one class, an unknown class).
    """
    root_path = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    counted(root_path)
    if not root_path.exists():
        raise DataError(f"dataset folder does not exist: {root_path}")
    if not root_path.is_dir():
        raise DataError(f"dataset path is not a folder: {root_path}")

    try:
        entries = sorted(root_path.iterdir())
    except OSError as exc:
        raise DataError(f"cannot list dataset folder {root_path}: {exc.strerror or exc}") from None
    class_dirs = [e for e in entries if not _is_hidden(e.name) and e.is_dir()]
    if not class_dirs:
        loose = [e for e in entries if not _is_hidden(e.name) and not e.is_dir()]
        hint = f" (found {len(loose)} file(s) directly in it)" if loose else ""
        raise DataError(
            f"no class folders in {root_path}{hint}: graft expects {root_path}/<class>/<image>, "
            f"one sub-folder per class"
        )

    folders_of = _class_dirs(root_path, class_dirs)
    if classes is None:
        class_names = list(folders_of)
        if len(class_names) == 1:
            raise DataError(
                f"found only one class '{class_names[0]}' in {root_path}: "
                f"a classifier needs at least two"
            )
    else:
        class_names = [class_name(c) for c in classes]
        duplicates = sorted({c for c in class_names if class_names.count(c) > 1})
        if duplicates:
            raise DataError(f"class list has duplicates: {', '.join(duplicates)}")
        unknown = [name for name in folders_of if name not in class_names]
        if unknown:
            raise DataError(
                f"folder(s) {', '.join(repr(u) for u in unknown)} in {root_path} are not known "
                f"classes; known classes: {', '.join(repr(c) for c in class_names)}"
            )
    label_of = {name: label for label, name in enumerate(class_names)}

    records: list[Record] = []
    for name, folders in folders_of.items():
        files = sorted(path for folder in folders for path in _files_under(folder))
        # A scored folder's empty class is a class without images, as a missing one: the
        # caller warns (its recall is not measured). Training cannot learn a class from nothing.
        if not files and classes is None:
            raise DataError(
                f"class folder '{name}' has no files ({folders[0]}): "
                f"an empty class cannot be learned"
            )
        records.extend(Record(path, label_of[name]) for path in files)
    if not records:
        raise DataError(f"no files in the class folders of {root_path}")
    records.sort(key=lambda r: (r.label, r.path))
    return ImageFolder(root_path, class_names, records)


def scan_unlabelled(root, need: str = "the target domain needs unlabelled images to adapt to",
                    flag: str | None = None) -> ImageFolder:
    """Every image file below ``root`` (at any depth), for a domain whose labels are not used:
    a flat folder, or class folders whose names are ignored. Labels are all -1. ``need``
    says, in the error for a folder without files, what the images were for; ``flag`` (the
    option that named ``root``, e.g. "--target") starts the error for a missing path or a file."""
    root_path = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    counted(root_path)
    if not root_path.exists():
        raise DataError(f"{flag} {root_path} does not exist" if flag else f"folder does not exist: {root_path}")
    if not root_path.is_dir():
        raise DataError(f"{flag} {root_path} is a file, not a folder: it takes a folder of images (any layout)"
                        if flag else f"path is not a folder: {root_path}")
    files = _files_under(root_path)
    if not files:
        raise DataError(f"no images in {root_path}: {need}")
    return ImageFolder(root_path, [], [Record(path, -1) for path in files])


def scan_images(root) -> ImageFolder:
    """Any folder of images, labelled or not, for reading features (``graft extract``).

    A class-folder tree (two or more sub-folders, no files beside them) is read as
    :func:`scan_folder` reads it, with its labels; anything else (a flat folder, a single
    sub-folder, files beside sub-folders) as unlabelled images: every file at any depth,
    ``classes`` empty and labels -1. Raises DataError for a missing folder or one with no files.
    """
    root_path = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    if root_path.is_dir():
        entries = [e for e in root_path.iterdir() if not _is_hidden(e.name)]
        if not any(not e.is_dir() for e in entries) and sum(e.is_dir() for e in entries) >= 2:
            return scan_folder(root_path)
    return scan_unlabelled(root_path, "it has no files at any depth")


def load_train_val(
    train_dir, val_dir=None, val_fraction=None, seed: int = 0, balanced: bool = False
) -> tuple[ImageFolder, ImageFolder | None]:
    """The training folder and its validation set: a separate folder, a split, or none.

    Warns about what would make the numbers misleading: the same file in two classes or in
    both training and validation, a largest class more than 5x the smallest (unless
    ``balanced``: the run already weighs or samples the classes equally), and classes
    without validation images.

    Parameters
    ----------
    train_dir, val_dir : str or os.PathLike
        Class-folder trees; ``val_dir`` (optional) is scanned against the training classes.
    val_fraction : float, optional
        Without ``val_dir``: hold out this stratified fraction (:func:`stratified_split`).
    seed : int, default 0
    balanced : bool, default False

    Returns
    -------
    (ImageFolder, ImageFolder or None)
        Training and validation; None when neither ``val_dir`` nor ``val_fraction`` is given.

    Raises
    ------
    DataError
        A folder that cannot be used (see :func:`scan_folder`).
    """
    if val_dir is not None and val_fraction is not None:
        raise DataError(
            "give either a validation folder or a validation fraction, not both"
        )
    whole = scan_folder(train_dir)
    val_folder = None
    if val_dir is not None:
        val_root = Path(os.path.abspath(os.path.expanduser(os.fspath(val_dir))))
        # Validating on the training images would report memorisation as accuracy.
        if val_root.exists() and os.path.samefile(val_root, whole.root):
            raise DataError(f"validation folder is the training folder: {val_root}")
        val_folder = scan_folder(val_root, classes=whole.classes)
    warn_duplicates(whole, val_folder, split=val_fraction is not None)
    if val_folder is not None:
        train, val = whole, val_folder
    elif val_fraction is not None:
        train, val = stratified_split(whole, val_fraction, seed)
    else:
        train, val = whole, None
    if not balanced:
        warn_imbalance(train)
    if val is not None:
        warn_unscored_classes(val, "validation")
    return train, val


def warn_unscored_classes(folder: ImageFolder, what: str) -> None:
    """One warning naming the classes a scored folder (validation, test, evaluate) has no
    images of, whether their folder is missing or empty."""
    missing = [name for name, n in folder.class_counts().items() if n == 0]
    if missing:
        warnings.warn(f"class(es) {', '.join(repr(m) for m in missing)} have no {what} images in {folder.root}: "
                      "their recall is not measured and they do not count in the macro F1", stacklevel=3)


def image_files(inputs) -> list[Path]:
    """Files and folders (searched recursively, hidden entries skipped) -> the files to read, in
    order. A missing file stays in the list: decoding reports it, nothing is dropped here.
    Raises DataError when nothing is left."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            # everything but folders: a FIFO or a dangling link is listed so decoding names it
            paths.extend(sorted(p for p in path.rglob("*") if not p.is_dir()
                                and not any(is_hidden(part) for part in p.relative_to(path).parts)))
        else:
            paths.append(path)
    if not paths:
        raise DataError("no image files found in " + ", ".join(map(str, inputs)))
    return paths
