"""What the benchmark scripts share: a scratch folder removed afterwards, rows saved as JSON."""
from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def scratch_folder(prefix: str):
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def save_rows(rows, path) -> None:
    """Write ``rows`` to ``path`` as JSON when a path was given (``--json``)."""
    if path:
        Path(path).write_text(json.dumps(rows, indent=1))
