"""Progress bars for long steps (tqdm on stderr), silenced when asked or when not wanted."""
from __future__ import annotations

import os


def progress_bar(total: int, desc: str, unit: str = "it", enable: bool = True):
    from tqdm.auto import tqdm

    disable = not enable or os.environ.get("GRAFT_NO_PROGRESS") == "1"
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True, leave=False)
