"""Files of the same content where they should not be: in two classes, or on both sides of a
train/validation split (by content: byte-identical copies, symlinks, hard links)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path


def check_output_outside(out, inputs: dict, named: str = "-o", remedy: str = "choose another -o") -> None:
    """Refuse (GraftError, one line) an output path that is, holds, or lies inside a folder the
    command reads: inside, graft's files would be read as data (or as classes) next time;
    holding it, clearing or replacing the run folder could delete the data. ``inputs``:
    {what it is ("DATA folder", "teacher run", ...): path}; entries that are not folders
    (model names, files, None) are skipped."""
    from graft.errors import GraftError

    target = Path(os.path.realpath(os.path.expanduser(os.fspath(out))))  # links resolved, as the folders'
    for what, source in inputs.items():
        if not source or not Path(os.path.expanduser(os.fspath(source))).is_dir():
            continue
        folder = Path(os.path.realpath(os.path.expanduser(os.fspath(source))))
        if target == folder:
            relation = "is"
        elif folder in target.parents:
            relation = "is inside"
        elif target in folder.parents:
            relation = "holds"
        else:
            continue
        raise GraftError(f"{named} {out} {relation} the {what} {folder} this command reads: graft's outputs must "
                         "stay outside its inputs (they would be read as data, or the data removed with the run); "
                         f"{remedy}")


def duplicate_groups(paths: list[Path]) -> list[list[Path]]:
    """Groups (two or more) of files with the same content: the same file reached twice
    (symlinks, hard links, or listed twice) or byte-identical copies. Only files whose sizes
    collide are read."""
    return [[paths[i] for i in group] for group in _same_content(paths)]


def _same_content(paths: list[Path]) -> list[list[int]]:
    """:func:`duplicate_groups` as positions in ``paths`` (a path listed twice is two positions)."""
    import hashlib

    by_size: dict[int, list[int]] = {}
    for index, path in enumerate(paths):
        try:
            by_size.setdefault(os.stat(path).st_size, []).append(index)
        except OSError:
            continue  # reported when it fails to decode
    groups: dict[str, list[int]] = {}
    for size, same_size in by_size.items():
        if len(same_size) < 2 or size == 0:
            continue
        for index in same_size:
            try:
                digest = hashlib.blake2b()
                with open(paths[index], "rb") as handle:
                    for chunk in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(chunk)
            except OSError:
                continue
            groups.setdefault(f"{size}:{digest.hexdigest()}", []).append(index)
    return [group for group in groups.values() if len(group) > 1]


def shared_images(scored: list[Path], other: list[Path]) -> list[tuple[Path, Path]]:
    """``(scored file, file of ``other`` with the same content)`` for every file of ``scored``
    that is also in ``other``: the same path, a link to it, or a byte-identical copy."""
    paths = list(scored) + list(other)
    pairs = []
    for group in _same_content(paths):
        mine = [i for i in group if i < len(scored)]
        theirs = [i for i in group if i >= len(scored)]
        if theirs:
            pairs += [(paths[i], paths[theirs[0]]) for i in mine]
    return sorted(pairs)


def overlaps(lists: dict[str, list[Path]]) -> dict[tuple[str, str], list[tuple[Path, Path]]]:
    """By content, between named file lists: ``{(a, b): [(file of a, a file of b with the same
    content), ...]}`` for every ordered pair of names whose lists share files (the same path, a
    link, a byte-identical copy). One pass over all lists: only files whose sizes collide are
    read. Pairs are sorted; names without shared files are absent."""
    names, paths = [], []
    for name, files in lists.items():
        names += [name] * len(files)
        paths += list(files)
    found: dict[tuple[str, str], list[tuple[Path, Path]]] = {}
    for group in _same_content(paths):
        present = list(dict.fromkeys(names[i] for i in group))
        for a in present:
            for b in present:
                if a != b:
                    other = next(paths[i] for i in group if names[i] == b)
                    found.setdefault((a, b), []).extend((paths[i], other) for i in group if names[i] == a)
    return {key: sorted(pairs) for key, pairs in found.items()}


def warn_trained_on(scored: list[Path], what: str, trained: list[Path], where: str = "training images") -> int:
    """One warning when images of a scored set (``what``: "test", "evaluation", ...) are also
    in ``trained`` by content: their score measures memory, not generalisation. Returns how many."""
    pairs = shared_images(scored, trained)
    if pairs:
        warnings.warn(f"{len(pairs)} of {len(scored)} {what} image(s) are also {where} (same content), e.g. "
                      f"{pairs[0][0]} = {pairs[0][1]}: the {what} score will be optimistic", stacklevel=3)
    return len(pairs)


def warn_duplicates(train, val, split: bool) -> None:
    """Warn (one line per kind, with an example) about files of the same content in two classes,
    in both training and validation, or twice in one class when a split may separate them."""
    source = {record.path: ("train", train.classes[record.label]) for record in train.records}
    if val is not None:
        source.update({record.path: ("val", val.classes[record.label]) for record in val.records})
    cross_class, train_val, within = [], [], []
    for group in duplicate_groups(list(source)):
        where = [source[p] for p in group]
        if len({label for _, label in where}) > 1:
            cross_class.append(group)
        elif len({part for part, _ in where}) > 1:
            train_val.append(group)
        elif split:
            within.append(group)

    def example(groups, differ=lambda path: path):
        """Two files of the first group that show the problem (two classes, train and val)."""
        group = groups[0]
        other = next((p for p in group[1:] if differ(p) != differ(group[0])), group[1])
        return f"{group[0]} = {other}"

    if cross_class:
        warnings.warn(f"{len(cross_class)} file(s) are in more than one class folder (same content), e.g. "
                      f"{example(cross_class, lambda p: source[p][1])}: they teach contradicting labels", stacklevel=3)
    if train_val:
        warnings.warn(f"{len(train_val)} validation image(s) are also in the training folder (same content), e.g. "
                      f"{example(train_val, lambda p: source[p][0])}: validation accuracy will be optimistic",
                      stacklevel=3)
    if within:
        warnings.warn(f"{len(within)} image(s) have identical copies in the same class, e.g. {example(within)}: "
                      "a validation split can put one copy on each side", stacklevel=3)
