"""A data folder's manifest: what a run trained on and scored (every file's size and mtime), so a
resume can say what changed since (graft.recipes keeps it in RUN/data.json)."""
from __future__ import annotations

import os

from graft.data.folders import ImageFolder


def folder_manifest(folder: ImageFolder) -> dict:
    """What a run was trained on: classes and every file with its size and modification time."""
    files = {}
    for record in folder.records:
        try:
            st = os.stat(record.path)
            files[str(record.path.relative_to(folder.root))] = [st.st_size, st.st_mtime_ns]
        except OSError:
            files[str(record.path.relative_to(folder.root))] = None
    return {"root": str(folder.root), "classes": list(folder.classes), "files": files}


def manifest_changes(before: dict, after: dict, most: int = 3) -> list[str]:
    """Readable differences between two :func:`folder_manifest` results (empty: unchanged)."""
    changes = []
    added_classes = [c for c in after["classes"] if c not in before["classes"]]
    removed_classes = [c for c in before["classes"] if c not in after["classes"]]
    if added_classes:
        changes.append(f"class(es) added: {', '.join(added_classes)}")
    if removed_classes:
        changes.append(f"class(es) removed: {', '.join(removed_classes)}")
    old, new = before["files"], after["files"]
    for what, names in (("gone", [f for f in old if f not in new]),
                        ("added", [f for f in new if f not in old]),
                        ("changed", [f for f in old if f in new and old[f] != new[f]])):
        if names:
            shown = ", ".join(sorted(names)[:most]) + (" ..." if len(names) > most else "")
            changes.append(f"{len(names)} file(s) {what} ({shown})")
    return changes
