"""Install torch and torchvision into the running interpreter's environment, the CPU build where one is
to be had (graft uses only the CPU; PyPI's default Linux build brings ~4 GB of CUDA and triton packages).

Run with the venv's interpreter (`make install` does: `.venv/bin/python tools/install_torch.py`).
In order, the first that applies:

1. torch is already installed: kept as it is (an existing venv is not changed under its users;
   `make clean install` starts afresh).
2. A local CPU pair: a ``torch-*+cpu`` wheel in pip's find-links folders (``pip config``, PIP_FIND_LINKS)
   and a torchvision wheel built for it (``+cpu``, or one whose metadata requires that very torch and
   that is not a CUDA build) beside it: installed from disk, nothing downloaded.
3. PyTorch's CPU wheel index (https://download.pytorch.org/whl/cpu), when it answers: torch and
   torchvision at the versions below, CPU builds (~200 MB to download).
4. Otherwise PyPI's default build at the same versions (with CUDA libraries: ~6 GB), saying why.

A lone local CPU torch wheel is not used: PyPI's torchvision wheels are built against the CUDA torch,
and with a CPU torch ``import torchvision`` fails ("operator torchvision::nms does not exist"); timm,
hence graft, imports torchvision. The versions are the ones graft is developed and benchmarked with;
TORCH_VERSION / TORCHVISION_VERSION in the environment override them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

TORCH = os.environ.get("TORCH_VERSION", "2.14.1")
TORCHVISION = os.environ.get("TORCHVISION_VERSION", "0.29.1")
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def pip(*args: str) -> int:
    """Run pip; its stderr without the lines a local index folder that lacks a package writes for
    each one ("Location ... is ignored: it is neither a file nor a directory")."""
    print("+ pip", " ".join(args), flush=True)
    done = subprocess.Popen([sys.executable, "-m", "pip", *args], stderr=subprocess.PIPE, text=True)
    for line in done.stderr:
        if "is ignored: it is neither a file nor a directory" not in line:
            sys.stderr.write(line)
    return done.wait()


def installed_torch() -> str | None:
    found = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True
    )
    return found.stdout.strip() if found.returncode == 0 else None


def find_links() -> list[Path]:
    """pip's find-links folders (its config and PIP_FIND_LINKS), as it would read them."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    values = re.findall(r"find-links='([^']*)'", listed) + [os.environ.get("PIP_FIND_LINKS", "")]
    folders = {Path(item.removeprefix("file://")) for value in values for item in value.split()}
    return sorted(folder for folder in folders if folder.is_dir())


def wheel_version(path: Path) -> str:
    return path.name.split("-")[1]


def requires_torch(wheel: Path) -> str | None:
    """The torch version a torchvision wheel pins (``Requires-Dist: torch (==X)``), or None."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode("utf-8", "replace")
    pinned = re.search(r"^Requires-Dist: torch \(?==([^\s);]+)", metadata, re.MULTILINE)
    return pinned.group(1) if pinned else None


def local_cpu_pair() -> tuple[Path, Path] | None:
    folders = find_links()
    torches = [w for folder in folders for w in folder.glob("torch-*+cpu-*.whl")]
    visions = [w for folder in folders for w in folder.glob("torchvision-*.whl")]
    for torch_wheel in sorted(torches, key=wheel_version, reverse=True):
        version = wheel_version(torch_wheel)
        for vision in visions:
            cpu_build = "+cpu" in vision.name and requires_torch(vision) in (version, version.split("+")[0])
            if cpu_build:
                return torch_wheel, vision
        print(
            f"found {torch_wheel}, but no CPU torchvision for it beside it: PyPI's torchvision is built for "
            "the CUDA torch and does not import with a CPU one, so it is not used"
        )
    return None


def index_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/torch/", timeout=15) as response:
            return response.status == 200
    except OSError:
        return False


def main() -> int:
    version = installed_torch()
    if version:
        print(f"torch {version} is already installed here: kept (make clean install for a fresh venv)")
        return 0
    pair = local_cpu_pair()
    if pair:
        print(f"installing the local CPU build: {pair[0].name}, {pair[1].name}")
        return pip("install", "-q", *map(str, pair))
    if index_answers(CPU_INDEX):
        print(f"installing torch {TORCH} and torchvision {TORCHVISION}, CPU builds, from {CPU_INDEX}")
        return pip(
            "install", "-q", f"torch=={TORCH}+cpu", f"torchvision=={TORCHVISION}+cpu", "--extra-index-url", CPU_INDEX
        )
    print(
        f"no CPU build of torch to be had here ({CPU_INDEX} does not answer and no local CPU pair): "
        f"installing PyPI's default build of torch {TORCH} (with CUDA libraries, about 6 GB)"
    )
    return pip("install", "-q", f"torch=={TORCH}", f"torchvision=={TORCHVISION}")


if __name__ == "__main__":
    sys.exit(main())
