"""Where graft keeps things it can recompute: extracted features and exported ONNX graphs.

One directory, ``$GRAFT_CACHE_DIR`` or ``~/.cache/graft``. Features live in one SQLite file per
extractor (backbone, weights hash, cut layer, preprocessing), keyed per image by the file's
absolute path, size and modification time, so a changed file is recomputed and any subset or
split of the same images hits the cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import numpy as np


def cache_root() -> Path:
    root = os.environ.get("GRAFT_CACHE_DIR")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "graft"


def stable_hash(obj) -> str:
    """sha256 of a JSON-able object, independent of dict order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def file_identity(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


class FeatureCache:
    """Per-image feature vectors of one extractor, in ``<root>/features/<key>.sqlite``."""

    def __init__(self, extractor_key: str, root: Path | None = None):
        directory = (root or cache_root()) / "features"
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{extractor_key}.sqlite"
        self._db = sqlite3.connect(self.path)
        self._db.execute("CREATE TABLE IF NOT EXISTS features (file TEXT PRIMARY KEY, vector BLOB)")

    def get_many(self, identities: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        chunk = 500  # SQLite's bound-parameter limit is at least 999
        for start in range(0, len(identities), chunk):
            part = identities[start:start + chunk]
            rows = self._db.execute(
                f"SELECT file, vector FROM features WHERE file IN ({','.join('?' * len(part))})", part
            )
            for file, blob in rows:
                found[file] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, items: list[tuple[str, np.ndarray]]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO features (file, vector) VALUES (?, ?)",
                [(k, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in items],
            )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM features").fetchone()[0]

    def close(self) -> None:
        self._db.close()
