"""Writing files so that a crash never leaves half of one, with the permissions a user expects;
reading back the files graft wrote, where a damaged one is one clear error.

Everything graft writes goes to a temporary name in the target's folder first and is renamed
into place. ``tempfile.mkstemp`` creates its file 0600 whatever the umask; the file is given
the permissions an ordinary ``open()`` would have given it (0666 less the umask) before the
rename, so run folders shared with a group stay readable by it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path


def current_umask() -> int:
    """The process's umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; on success it replaces ``path``, else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically.

    A file name that is not valid UTF-8 reaches Python with lone surrogates (PEP 383); those
    are written back as the name's own bytes (surrogateescape), so a path in a CSV or report
    is the file's true name and :func:`read_text` gives the same string back."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, errors="surrogateescape")
    return Path(path)


def _damaged(path: Path, what: str):
    from graft.errors import GraftError

    return GraftError(f"{path}: {what}; the file is damaged or cut short (graft writes it whole), so restore it or "
                      "run the command that wrote it again")


def read_text(path: str | Path) -> str:
    """A file graft wrote, as text; GraftError (one line naming it) when it cannot be read."""
    path = Path(path)
    try:
        return path.read_text(errors="surrogateescape")  # as write_atomic wrote it
    except FileNotFoundError:
        from graft.errors import GraftError

        raise GraftError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _damaged(path, f"cannot be read ({getattr(exc, 'strerror', None) or exc})") from None


def read_json(path: str | Path, kind: type = dict):
    """A JSON file graft wrote (metrics.json, data.json, ...), which must hold a ``kind``;
    GraftError naming the file when it is truncated, edited into invalid JSON or holds another type."""
    path = Path(path)
    try:
        value = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise _damaged(path, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(value, kind):
        raise _damaged(path, f"expected a JSON {kind.__name__}, found {type(value).__name__}")
    return value


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping graft wrote (config.yaml); an empty file is ``{}``. GraftError when it does not parse."""
    import yaml

    path = Path(path)
    try:
        value = yaml.safe_load(read_text(path)) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise _damaged(path, "not valid YAML" + (f" (line {mark.line + 1})" if mark else "")) from None
    if not isinstance(value, dict):
        raise _damaged(path, f"expected a YAML mapping, found {type(value).__name__}")
    return value


def read_json_lines(path: str | Path, needed: int | None = None) -> list[dict]:
    """The rows of a JSON-lines file (history.jsonl), at most ``needed``. A last line without its
    newline that does not parse is dropped (a kill while the row was appended); any other bad
    row is a GraftError naming the file and line."""
    path = Path(path)
    text, rows = read_text(path), []
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if needed is not None and len(rows) >= needed:
            break
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if row is None and number == len(lines) and not text.endswith("\n"):
            break
        if not isinstance(row, dict):
            raise _damaged(path, f"line {number} is not a JSON object")
        rows.append(row)
    return rows


def stable_hash(obj) -> str:
    """sha256 of a JSON-able object, independent of dict order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def file_identity(path: Path) -> str:
    """Path, size, modification time, change time and inode, from one ``stat``.

    Size and mtime alone miss a file rewritten with the same size whose mtime was put back
    (``cp -p``, ``touch -r``, rsync -t, some editors); the change time cannot be set from user
    space and moves on every write, and a file replaced by another gets a new inode. Hashing
    the contents would catch the rest, at the price of reading every image on every run
    (bench/bench_cache_identity.py measures both).
    """
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"


def json_safe(obj):
    """numpy scalars/arrays and Paths -> JSON/YAML-safe Python values (dicts and lists walked)."""
    np = sys.modules.get("numpy")  # without numpy imported there is no numpy value to convert
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if np is not None and isinstance(obj, np.generic):
        return obj.item()
    if np is not None and isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj
