"""The models ``graft serve`` answers for: their URL names, public metadata and on-disk state.

* Names: ``NAME=RUN`` names a model; a bare ``RUN`` is named after its folder (the parent's for
  a folder called ``model``). Two models with one name are refused, naming both folders: a
  name never silently becomes ``NAME-2``.
* Metadata is read once, with the model (``graft.json``, the run's ``metrics.json``), so an
  answer never mixes one run's classes with another's metrics. The files it came from are
  fingerprinted (inode, size, modification time) before the model is loaded; when they differ
  later (a re-run into the folder), ``GET /v1/models/NAME`` still describes the served model
  and says ``"changed_on_disk": true``, and a warning is logged once. The server does not
  reload: restarting it serves the new model.
* Public metadata carries no server paths: every string that names a file or folder (the
  training and validation folders, a teacher run, ...) is left out.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from graft._io.artifact import CONFIG_FILE, WEIGHTS_FILE, model_folder
from graft.artifacts.novelty import NOVELTY_FILE
from graft.errors import GraftError

log = logging.getLogger("graft.serve")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]*$")  # unreserved URL characters: the name is a path segment


def named_runs(arguments) -> dict[str, Path]:
    """``NAME=RUN`` or ``RUN`` arguments -> {name: run folder}, in the order given.

    An argument that is an existing path is a run folder even if it holds ``=``. Raises
    GraftError for a missing folder, a name that cannot be a URL segment, or two models with
    one name (the message names both folders)."""
    runs: dict[str, Path] = {}
    for argument in arguments:
        name, _, folder = (None, "", argument) if os.path.exists(argument) or "=" not in argument \
            else argument.partition("=")
        path = Path(folder).expanduser()
        if not folder:  # Path("") is the current folder: 'x=' would serve wherever the server starts
            raise GraftError(f"{argument}: no run folder after '=' (NAME=RUN)")
        if not path.is_dir():
            raise GraftError(f"{folder}: no such folder" + (f" (for model {name!r})" if name else ""))
        if name is None:
            resolved = path.resolve()
            name = resolved.parent.name if resolved.name == "model" else resolved.name
        if not _NAME.match(name):
            raise GraftError(f"{name!r} cannot name a model in a URL: use letters, digits, '.', '_', '-' and '~' "
                             f"(NAME={folder})")
        if name in runs:
            raise GraftError(f"two models would be served as {name!r}: {runs[name]} and {folder}; "
                             f"name them: graft serve {name}={runs[name]} OTHER={folder}")
        runs[name] = path
    return runs


def _fingerprint(predictor_dir: Path) -> dict:
    """(inode, size, mtime) of each file the model and its metadata come from; None when absent."""
    run_dir = predictor_dir.parent if predictor_dir.name == "model" else None
    files = [predictor_dir / CONFIG_FILE, predictor_dir / WEIGHTS_FILE, predictor_dir / NOVELTY_FILE]
    if run_dir is not None:
        files.append(run_dir / "metrics.json")
    state = {}
    for path in files:
        try:
            info = path.stat()
            state[str(path)] = (info.st_ino, info.st_size, info.st_mtime_ns)
        except OSError:
            state[str(path)] = None
    return state


def _path_like(value: str) -> bool:
    return (os.path.isabs(value) or value.startswith(("~", "./", "../")) or bool(re.match(r"^[A-Za-z]:[\\/]", value))
            or ("/" in value and os.path.exists(value)))


def public_metadata(value):
    """``value`` without strings that name files or folders (dict entries and list items),
    recursively: what any client may see of a model's metadata."""
    if isinstance(value, dict):
        return {k: public_metadata(v) for k, v in value.items() if not (isinstance(v, str) and _path_like(v))}
    if isinstance(value, (list, tuple)):
        return [public_metadata(v) for v in value if not (isinstance(v, str) and _path_like(v))]
    return value


@dataclass
class ServedModel:
    """One served model: ``predictor`` (an OnnxPredictor), its public ``metadata`` read once,
    and the fingerprint of its files at load time."""

    name: str
    predictor: object
    metadata: dict
    fingerprint: dict = field(repr=False)
    warned: bool = False

    @classmethod
    def load(cls, name: str, run, loader) -> "ServedModel":
        """``loader(run)`` -> predictor, with the fingerprint taken before it reads anything."""
        folder = model_folder(run)
        before = _fingerprint(folder) if folder is not None else {}
        predictor = loader(run)
        return cls(name, predictor, public_metadata(predictor.describe()), before)

    @classmethod
    def of(cls, name: str, predictor) -> "ServedModel":
        """A predictor loaded already (fingerprinted now)."""
        before = _fingerprint(predictor.model_dir)
        return cls(name, predictor, public_metadata(predictor.describe()), before)

    def changed_on_disk(self) -> bool:
        """Whether the model's files differ from those it was loaded from (warned once)."""
        changed = _fingerprint(self.predictor.model_dir) != self.fingerprint
        if changed and not self.warned:
            self.warned = True
            log.warning("graft serve: the files of model %r changed on disk since it was loaded; it still "
                        "answers with the loaded model (restart the server to serve the new one)", self.name)
        return changed

    def describe(self) -> dict:
        return {"name": self.name, **self.metadata, "changed_on_disk": self.changed_on_disk()}
