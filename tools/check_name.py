"""Is graft's distribution name free on the package index, or ours? (`make check-name`, .ci/run)

Reads the name and the project's description from pyproject.toml and asks PyPI's JSON API
(https://pypi.org/pypi/<name>/json): 404 means the name is free; a project there whose summary is
ours (the same description) is graft's own earlier upload; anything else is someone else's project,
and the check fails (exit 1) naming it. Without a network it says plainly that it could not check
and exits 0 (exit 2 with --require-online), so an offline build still builds.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--require-online", action="store_true", help="exit 2 when PyPI cannot be reached")
    parser.add_argument("--index", default="https://pypi.org/pypi", help="the JSON API's base URL")
    args = parser.parse_args()
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    name, ours = project["name"], project["description"]
    url = f"{args.index}/{name}/json"
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            info = json.load(response)["info"]
    except urllib.error.HTTPError as error:
        if error.code == 404:
            print(f"{name}: free on the package index ({url} answers 404)")
            return 0
        print(f"{name}: could not check, {url} answered HTTP {error.code}")
        return 2 if args.require_online else 0
    except (OSError, ValueError) as error:  # no network, DNS, timeout, a proxy's page
        print(
            f"{name}: could NOT check the package index (offline? {url}: {error}); the name was free when "
            "last checked online (see CHANGELOG.md)"
        )
        return 2 if args.require_online else 0
    if info.get("summary") == ours:
        print(f"{name}: on the package index already, ours ({info.get('version')}: the same description)")
        return 0
    print(
        f"{name}: TAKEN on the package index by another project: {info.get('summary')!r} "
        f"(version {info.get('version')}, {info.get('project_url') or url}); choose another name in pyproject.toml"
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
