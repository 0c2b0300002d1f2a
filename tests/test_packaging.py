"""The package as it ships (issue 29): the version written once and read everywhere, messages that name
the distribution (graft-vision: `graft` on the index is another project) and an extra it defines, py.typed."""
from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from click.testing import CliRunner

import graft
from graft.cli import main

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]


def test_the_version_is_written_once_and_read_everywhere():
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "graft.__version__"}
    assert metadata.version(PROJECT["name"]) == graft.__version__
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output.strip().endswith(graft.__version__), result.output


def test_install_hints_name_the_distribution_and_an_extra_it_defines():
    extras = set(PROJECT["optional-dependencies"])
    hints = [(path.relative_to(ROOT), dist, extra) for path in sorted((ROOT / "src" / "graft").rglob("*.py"))
             for dist, extra in re.findall(r"pip install '([\w.-]+)\[([^\]]+)\]'", path.read_text(encoding="utf-8"))]
    assert len(hints) >= 3, hints  # serve, audit, ... say which extra they need
    wrong = [hint for hint in hints if hint[1] != PROJECT["name"] or (hint[2] not in extras and "{" not in hint[2])]
    assert not wrong, f"install hints naming another distribution or an extra pyproject.toml lacks: {wrong}"


def test_py_typed_ships_with_the_package():
    assert (Path(graft.__file__).parent / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["graft"]
